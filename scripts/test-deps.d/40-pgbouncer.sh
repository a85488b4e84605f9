#!/usr/bin/env bash
# pgbouncer for tests/integration/test_pgbouncer.py: Supabase's transaction pooler is
# pgbouncer in transaction mode, so the tests run a real one (Debian's package) on a free
# loopback port in front of the test PostgreSQL. Only the binary is needed: the package's
# own service is stopped and disabled so it never listens on 6432. Idempotent.
set -euo pipefail

if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# policy-rc.d 101: do not start the packaged service during installation.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends pgbouncer
