#!/usr/bin/env bash
# Regenerates the dashboard screenshots in docs/images/ (dashboard.png, dashboard-down.png,
# dashboard-scale.png): the browser tests take them while they run, on real workers, etcd and a
# sync agent (and 99 simulated members for the scale one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
npx tsc -p tsconfig.json
exec node --test --test-concurrency=1 dist/test/ui/dashboard.test.js dist/test/ui/dashboard-scale.test.js
