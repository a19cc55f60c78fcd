#!/usr/bin/env bash
# The whole test suite: installs what the tests need (system packages, npm packages), builds,
# then runs unit tests and integration tests. Integration tests start their own etcd, S3 server
# and worker processes on free loopback ports and stop them afterwards.
#   scripts/test.sh            all tests
#   scripts/test.sh unit       unit tests only (no servers)
#   scripts/test.sh FILE...    the given compiled or source test files
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh all
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# The FUSE addon (mount tests): a missing toolchain is an error here, not a note.
FANOUT_REQUIRE_NATIVE=1 npm run --silent build:native
npx tsc -p tsconfig.json
# The one-file bundles the CLI runs from after `npm ci` (a stale one is never used).
node scripts/build-cli-bundle.mjs

# The etcd endpoint state file (lib/membership/endpointstate.ts) stays out of the user's cache:
# the suite's etcds come and go on random ports. Its own tests give it a file of their own.
export FANOUT_ETCD_STATE="${FANOUT_ETCD_STATE:-off}"

unit=$(find dist/src -name '*.test.js' | sort)
integration=$(find dist/test -name '*.test.js' | sort)
case "${1:-all}" in
  all) files="$unit $integration" ;;
  unit) files="$unit" ;;
  *) files=$(for f in "$@"; do f=${f%.ts}; f=${f%.js}; echo "dist/${f#dist/}.js"; done) ;;
esac
# Integration files start real servers; two at a time keeps a 2-core machine responsive.
exec node --test --test-concurrency=2 $files
