#!/usr/bin/env bash
# gcloud-tasks-emulator for tests/integration/test_cloud_tasks_emulator.py, in its own
# virtualenv (.venv-emulator/ beside the project venv): 0.6.2 pins protobuf<5, which
# would drag the project's google-cloud-tasks back to an old release if they shared one.
# The tests start it as a subprocess on a free loopback port. Idempotent: a re-run with
# the emulator already installed returns at once.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
EMULATOR_VENV="${EMULATOR_VENV:-$ROOT/.venv-emulator}"
VERSION="0.6.2"
BIN="$EMULATOR_VENV/bin/gcloud-tasks-emulator"

if [ -x "$BIN" ] && "$EMULATOR_VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('gcloud-tasks-emulator') != '$VERSION')" \
    2>/dev/null; then
    exit 0
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -n "${VENV:-}" ] && [ -x "$VENV/bin/python" ]; then
        # The project venv's interpreter (not the venv itself): same Python, own packages.
        PYTHON="$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        PYTHON="python3"
    fi
fi
"$PYTHON" -m venv "$EMULATOR_VENV"
"$EMULATOR_VENV/bin/python" -m pip install -qq --disable-pip-version-check \
    "gcloud-tasks-emulator==$VERSION"
test -x "$BIN"
