#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser test (tests/dashboard/test_browser.py).
# Playwright drives it through executable_path; no browser is ever downloaded
# (`playwright install` is not used). Idempotent: fast when chromium is already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

# Refresh the package lists only when apt does not know the package yet (a fresh
# machine, or lists cleaned away), so a re-run costs no network round trip.
if ! apt-cache show chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
