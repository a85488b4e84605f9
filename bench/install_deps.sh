#!/usr/bin/env bash
# Benchmark-only peers (not test deps): pgbench for the PostgreSQL ceiling, procrastinate
# for the side-by-side queue. Idempotent and fast when already installed; runs as root on
# a fresh Debian machine. VENV defaults to .venv.
set -euo pipefail
VENV="${VENV:-.venv}"

if ! command -v pgbench >/dev/null 2>&1 \
   && ! ls "$VENV"/lib/python3*/site-packages/pgserver/pginstall/bin/pgbench >/dev/null 2>&1; then
    echo "installing pgbench (postgresql-client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
fi

if ! "$VENV/bin/python" -c "import procrastinate" >/dev/null 2>&1; then
    echo "installing procrastinate"
    "$VENV/bin/pip" install --quiet "procrastinate>=3.10,<4"
fi
