#!/usr/bin/env bash
# Installs the system packages fanout's tests and tools need, idempotently.
# Debian: etcd (membership tests), fuse3 (mount), awscli and boto3 (gateway tests), curl, openssl (TLS tests), nginx (benchmarks' baseline).
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
# TLS tests make their own CA and certificates.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# S3 gateway tests: Debian's awscli (v2, /usr/bin/aws) and boto3 for /usr/bin/python3. An awscli v1
# elsewhere on PATH (pyenv's, on some images) is tested as well when present: it signs with SigV2.
[ -x /usr/bin/aws ] || need+=(awscli)
/usr/bin/python3 -c 'import boto3' >/dev/null 2>&1 || need+=(python3-boto3)
# FUSE mount: the fusermount3 helper, libfuse3 headers and a C++ toolchain for the native addon.
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
dpkg -s libfuse3-dev >/dev/null 2>&1 || need+=(libfuse3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# Benchmarks: nginx (sendfile) is the baseline a user would pick instead.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package may start a system etcd on the default ports; tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true; fi
fi
