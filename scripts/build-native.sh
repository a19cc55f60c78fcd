#!/usr/bin/env bash
# Builds the FUSE addon (native/fuse) that `fanout mount` loads. Run by `npm run build:native`
# (and so by `npm ci`, through `prepare`). Without libfuse3's headers it prints a note and
# succeeds, so installing fanout still works for users who never mount; set
# FANOUT_REQUIRE_NATIVE=1 (scripts/test.sh does) to make that an error instead.
set -euo pipefail
cd "$(dirname "$0")/../native/fuse"

missing() {
  echo "fanout: $1: skipping the FUSE addon; \`fanout mount\` will not work." >&2
  echo "fanout: install libfuse3-dev, pkg-config and g++ (scripts/install-system-deps.sh), then run \`npm run build:native\`." >&2
  [ "${FANOUT_REQUIRE_NATIVE:-}" = 1 ] && exit 1
  exit 0
}
command -v pkg-config >/dev/null 2>&1 || missing "pkg-config not found"
pkg-config --exists fuse3 || missing "libfuse3 headers not found"
command -v g++ >/dev/null 2>&1 || missing "g++ not found"

addon=build/Release/fanout_fuse.node
if [ -z "${FANOUT_REBUILD_NATIVE:-}" ] && [ -f "$addon" ] && [ "$addon" -nt fuse.cc ] && [ "$addon" -nt binding.gyp ]; then
  exit 0  # up to date
fi

# node-gyp would download Node's headers; use the ones installed beside node when they exist.
args=()
prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
[ -f "$prefix/include/node/node_api.h" ] && args+=(--nodedir="$prefix")
# npm puts its bundled node-gyp on PATH for scripts; outside npm, use the one npm ships.
if command -v node-gyp >/dev/null 2>&1; then
  gyp=(node-gyp)
else
  gyp=(node "$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js")
fi
"${gyp[@]}" rebuild --release "${args[@]}" >build.log 2>&1 || { cat build.log >&2; echo "fanout: building the FUSE addon failed" >&2; exit 1; }
echo "fanout: built the FUSE addon ($(pwd)/build/Release/fanout_fuse.node)" >&2
