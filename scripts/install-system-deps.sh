#!/usr/bin/env bash
# Installs the Debian packages fanout needs, idempotently.
#   install-system-deps.sh runtime   what the product needs: fuse3 (fusermount3, for `fanout mount`),
#                                    libfuse3-dev, zlib1g-dev (the checksum addon), pkg-config, g++, make and python3 (node-gyp) to build
#                                    the native addons. Run by `npm ci` (package.json `prepare`).
#   install-system-deps.sh [all]     runtime + what the tests use: etcd, curl, openssl, awscli, boto3,
#                                    s3fs and rclone (S3 gateway clients), prometheus (promtool checks
#                                    /metrics and examples/monitoring), chromium (the /ui tests), nginx
#                                    (the baseline of bench/single-client.mjs), libfaketime (steps a
#                                    worker's wall clock: test/harness/faketime.ts), iproute2 (network
#                                    namespaces whose packets a test drops: test/harness/netns.ts).
#                                    Run by scripts/test.sh.
# As root with apt-get, installs what is missing. Otherwise (not root, no apt-get, or
# FANOUT_SYSTEM_DEPS=skip) prints the exact command to run and exits 0: installing fanout goes on,
# and scripts/build-native.sh says which feature is missing.
# Quick when everything is present: one dpkg-query, no `apt-get update`.
set -euo pipefail
mode=${1:-all}

runtime=(fuse3 libfuse3-dev zlib1g-dev pkg-config g++ make python3)
tests=(etcd-server etcd-client curl openssl awscli python3-venv python3-boto3 s3fs rclone prometheus chromium nginx libfaketime iproute2)
case "$mode" in
  runtime) wanted=("${runtime[@]}") ;;
  all) wanted=("${runtime[@]}" "${tests[@]}") ;;
  *) echo "usage: $0 [runtime|all]" >&2; exit 2 ;;
esac

# Which of the wanted packages dpkg does not have installed ("ii"). A machine without dpkg has none.
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  declare -A installed=()
  while read -r name status; do
    [ "$status" = ii ] && installed[${name%%:*}]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null || true)
  for pkg in "${wanted[@]}"; do [ -n "${installed[$pkg]:-}" ] || missing+=("$pkg"); done
else
  missing=("${wanted[@]}")
fi
# awscli v1 (SigV2 presigning) is not a Debian package: a pinned virtualenv, after the packages.
awscli_v1() { if [ "$mode" = all ]; then bash "$(dirname "$0")/install-awscli-v1.sh"; fi; }
if [ ${#missing[@]} -eq 0 ]; then awscli_v1; exit 0; fi

install="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "${FANOUT_SYSTEM_DEPS:-}" = skip ] || ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "fanout: missing system packages; install them with: sudo apt-get update && sudo $install" >&2
  else
    echo "fanout: missing system packages (Debian names): ${missing[*]}; install their equivalents with your package manager." >&2
  fi
  awscli_v1
  exit 0
fi

echo "fanout: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may be running unattended-upgrades: wait for the dpkg lock instead of failing.
lock=(-o DPkg::Lock::Timeout=300)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's etcd, prometheus and nginx packages start system servers on their default ports;
# tests and benchmarks start their own on free ports, and only the binaries are wanted.
if command -v systemctl >/dev/null 2>&1; then
  for pair in etcd-server:etcd prometheus:prometheus nginx:nginx; do
    if [[ " ${missing[*]} " == *" ${pair%%:*} "* ]]; then systemctl disable --now "${pair##*:}" >/dev/null 2>&1 || true; fi
  done
fi
awscli_v1
