#!/usr/bin/env bash
# Builds the native addons: native/fuse (what `fanout mount` loads) and native/sendfile (cached
# pages sent by the kernel; without it workers send pages through JS). Run by
# `npm run build:native` (and so by `npm ci`, through `prepare`). A missing toolchain or libfuse3
# prints a note and succeeds, so installing fanout still works; set FANOUT_REQUIRE_NATIVE=1
# (scripts/test.sh does) to make that an error instead.
set -euo pipefail
native="$(cd "$(dirname "$0")/../native" && pwd)"

note() {
  echo "fanout: $1" >&2
  echo "fanout: install libfuse3-dev, pkg-config, gcc and g++ (scripts/install-system-deps.sh), then run \`npm run build:native\`." >&2
  [ "${FANOUT_REQUIRE_NATIVE:-}" = 1 ] && exit 1
  return 0
}

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

# build <dir> <target> <source> <what>
build() {
  local dir="$native/$1" addon="build/Release/$2.node"
  (
    cd "$dir"
    # Up to date when the addon is newer than binding.gyp and every source beside it (not only $3).
    fresh=1
    for f in binding.gyp "$3" *.c *.cc *.h; do
      [ -f "$f" ] && ! [ "$addon" -nt "$f" ] && fresh=0
    done
    if [ -z "${FANOUT_REBUILD_NATIVE:-}" ] && [ -f "$addon" ] && [ "$fresh" = 1 ]; then
      exit 0 # up to date
    fi
    "${gyp[@]}" rebuild --release "${args[@]}" >build.log 2>&1 || { cat build.log >&2; echo "fanout: building $4 failed" >&2; exit 1; }
    echo "fanout: built $4 ($dir/$addon)" >&2
  )
}

if ! command -v gcc >/dev/null 2>&1; then
  note "gcc not found: skipping the sendfile addon; workers will send cached pages through JS."
else
  build sendfile fanout_sendfile sendfile.c "the sendfile addon"
fi

if ! command -v pkg-config >/dev/null 2>&1; then
  note "pkg-config not found: skipping the FUSE addon; \`fanout mount\` will not work."
elif ! pkg-config --exists fuse3; then
  note "libfuse3 headers not found: skipping the FUSE addon; \`fanout mount\` will not work."
elif ! command -v g++ >/dev/null 2>&1; then
  note "g++ not found: skipping the FUSE addon; \`fanout mount\` will not work."
else
  build fuse fanout_fuse fuse.cc "the FUSE addon"
fi
