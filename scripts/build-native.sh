#!/usr/bin/env bash
# Builds the native addons: native/fuse (what `fanout mount` loads), native/sendfile (cached
# pages sent by the kernel; without it workers send pages through JS), native/checksum (CRC32
# by PCLMUL; without it pages are checked with Node's zlib.crc32), native/smallio and
# native/files (small files in one pool job each), native/memory (read buffers in huge pages) and
# native/exit (a watchdog for Node's exit).
# Run by `npm run build:native` (and so by `npm ci`, through `prepare`, after scripts/install-system-deps.sh runtime).
# A missing toolchain or libfuse3 is an error where install-system-deps.sh could have installed it
# (root with apt-get): `npm ci` succeeding there promises every feature, `fanout mount` included.
# Elsewhere (not root, no apt-get, FANOUT_SYSTEM_DEPS=skip) it prints what to install and succeeds,
# so installing fanout still works without mount; FANOUT_REQUIRE_NATIVE=1 (scripts/test.sh) makes
# it an error there too. A compiler that fails on the sources is always an error.
set -euo pipefail
native="$(cd "$(dirname "$0")/../native" && pwd)"

require=${FANOUT_REQUIRE_NATIVE:-}
if [ -z "$require" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${FANOUT_SYSTEM_DEPS:-}" != skip ]; then
  require=1
fi

note() {
  echo "fanout: $1" >&2
  echo "fanout: install fuse3, libfuse3-dev, pkg-config, g++, make and python3 (as root: bash scripts/install-system-deps.sh runtime), then run \`npm run build:native\`." >&2
  [ "$require" = 1 ] && exit 1
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
    # Up to date when the addon is newer than binding.gyp, every source beside it (not only $3)
    # and the shared sources in native/common that some addons compile too.
    fresh=1
    for f in binding.gyp "$3" *.c *.cc *.h ../common/*.c ../common/*.h; do
      [ -f "$f" ] && ! [ "$addon" -nt "$f" ] && fresh=0
    done
    if [ -z "${FANOUT_REBUILD_NATIVE:-}" ] && [ -f "$addon" ] && [ "$fresh" = 1 ]; then
      exit 0 # up to date
    fi
    "${gyp[@]}" rebuild --release "${args[@]}" >build.log 2>&1 || { cat build.log >&2; echo "fanout: building $4 failed" >&2; exit 1; }
    echo "fanout: built $4 ($dir/$addon)" >&2
  )
}

# Tools not on PATH, among the arguments, as "make python3 " (node-gyp runs make and python3).
lacking() { local t; for t in "$@"; do command -v "$t" >/dev/null 2>&1 || printf '%s ' "$t"; done; }

# build_c <dir> <target> <source> <what> <without it>: a C addon, or a note of the missing tools.
build_c() {
  local lack
  lack=$(lacking make python3 gcc)
  if [ -n "$lack" ]; then
    note "${lack}not found: skipping $4; $5"
  else
    build "$1" "$2" "$3" "$4"
  fi
}

build_c sendfile fanout_sendfile sendfile.c "the sendfile addon" "workers will send cached pages through JS."

# CRC32 by carry-less multiplication (readers and the store check every page with it); without it
# checksums use Node's zlib.crc32. Links the system zlib (zlib1g-dev) for the tail of a buffer.
if [ -z "$(lacking make python3 gcc)" ] && ! [ -f /usr/include/zlib.h ]; then
  note "zlib headers not found (package zlib1g-dev): skipping the checksum addon; pages are checked with Node's zlib.crc32."
else
  build_c checksum fanout_checksum crc32.c "the checksum addon" "pages are checked with Node's zlib.crc32."
fi

# Small files in one thread-pool job each, where Node's fs calls take several hand-offs per file:
# smallio for the worker's small pages (a cold page's source read, its store write, a warm batch
# item's read), files for whole small files written many at a time (sync staging, `fanout cp` of
# a tree). Without them the same work goes through fs calls.
build_c smallio fanout_smallio smallio.c "the small-page addon" "small pages are read and written through Node's fs."
build_c files fanout_files files.c "the files addon" "small files are written through Node's fs."

# Read buffers in transparent huge pages (a fresh page fault is dear on these VMs); without it
# they are ordinary Buffers.
build_c memory fanout_memory memory.c "the memory addon" "read buffers are allocated in 4 KiB pages."

# A watchdog armed as a command exits: Node's exit can hang for ever on a V8 compile job waiting
# for a garbage collection (native/exit/exit.c); without it a command exits as Node does.
build_c exit fanout_exit exit.c "the exit watchdog addon" "a command exits as Node does."

lack=$(lacking make python3 g++ pkg-config)
if [ -n "$lack" ]; then
  note "${lack}not found: skipping the FUSE addon; \`fanout mount\` will not work."
elif ! pkg-config --exists fuse3; then
  note "libfuse3 headers not found (package libfuse3-dev): skipping the FUSE addon; \`fanout mount\` will not work."
else
  build fuse fanout_fuse fuse.cc "the FUSE addon"
fi
# The addon mounts through the fusermount3 helper (package fuse3).
command -v fusermount3 >/dev/null 2>&1 || note "fusermount3 not found (package fuse3): \`fanout mount\` will not work."
exit 0
