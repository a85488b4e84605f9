"""``python -m dashboard [streamlit options]``: check, then ``streamlit run dashboard/app.py``.

The check runs before the server listens: the settings must be valid, and with
ENVIRONMENT=production a sign-in (OIDC provider in secrets, or DASHBOARD_PASSWORD) must be
configured. A production dashboard that would be open exits with status 2 and the reason
instead of serving anything. ``--check`` checks and exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core import startup
from core.errors import ConfigError
from dashboard import auth

APP = Path(__file__).resolve().parent / "app.py"


def check() -> str:
    """The sign-in mode this dashboard will use; ConfigError when it must not start."""
    settings = startup.checked_settings()  # one-line ConfigError naming the variable
    mode = auth.plan(settings, auth.secrets_auth_section()).mode
    # The same start-up checks as the worker: the database answers, Cloud Tasks has
    # credentials. (The OpenAI key is shown on the pages, core.startup.check_openai_key.)
    startup.preflight(settings, database=True, provider=False)
    return mode


def main(argv: list[str]) -> int:
    # This process (and the Streamlit server it becomes) is the dashboard: production
    # does not ask it for the worker's API_KEY / TASK_SECRET (core.config SERVICE_ROLE).
    os.environ.setdefault("SERVICE_ROLE", "dashboard")
    try:
        mode = check()
    except ConfigError as exc:
        message = " ".join(exc.message.split())
        print(f"dashboard refuses to start: {message}", file=sys.stderr)
        return 2
    print(f"dashboard sign-in: {mode}", file=sys.stderr)
    if "--check" in argv:
        return 0
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(APP), *argv])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
