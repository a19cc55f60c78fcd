#!/usr/bin/env bash
# Makes sure an awscli v1 is on this machine beside Debian's v2, for the S3 gateway tests: v1
# presigns with SigV2 (`?AWSAccessKeyId=…&Signature=…&Expires=`), v2 with SigV4, and the tests run
# both (test/integration/gateway.test.ts). Debian 12 packages only v2, so v1 goes into its own
# virtualenv, pinned, at /opt/fanout-test/awscli-v1 (where the tests look for it), unless one is
# already reachable: `aws` on PATH or pyenv's shim (a fresh image of this kind has a pyenv v1).
# Idempotent; as root only (otherwise prints the command and exits 0, like install-system-deps.sh).
set -euo pipefail
VERSION=1.45.11
DIR=/opt/fanout-test/awscli-v1

is_v1() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1; "$1" --version 2>&1 | grep -q '^aws-cli/1\.'; }
for candidate in aws "$HOME/.pyenv/shims/aws" "$DIR/bin/aws"; do
  if is_v1 "$candidate"; then exit 0; fi
done

install="/usr/bin/python3 -m venv $DIR && $DIR/bin/pip install -q awscli==$VERSION"
if [ "$(id -u)" -ne 0 ] || [ "${FANOUT_SYSTEM_DEPS:-}" = skip ] || [ ! -x /usr/bin/python3 ]; then
  echo "fanout: no awscli v1 (the SigV2 presign tests need one); install it with: sudo bash -c '$install'" >&2
  exit 0
fi
echo "fanout: installing awscli $VERSION (SigV2 presign tests) in $DIR" >&2
rm -rf "$DIR"
# A machine whose package index has no awscli (no PyPI mirror) must not fail the whole install:
# say so and go on; the gateway test then names what is missing.
if ! { /usr/bin/python3 -m venv "$DIR" && "$DIR/bin/pip" install -q --disable-pip-version-check "awscli==$VERSION" && is_v1 "$DIR/bin/aws"; }; then
  rm -rf "$DIR"
  echo "fanout: could not install awscli $VERSION with pip; the SigV2 presign tests need an awscli v1 on PATH" >&2
fi
exit 0
