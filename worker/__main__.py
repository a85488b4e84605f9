"""``python -m worker``: run the worker (and, locally, its dispatcher) with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from core import logs
from core.config import get_settings
from core.errors import ConfigError
from worker.app import create_app


def main() -> None:
    try:
        settings = get_settings()
    except ConfigError as exc:
        # A configuration mistake is the operator's to fix: say what, without a traceback
        # (the message names variables, never their values).
        print(f"configuration error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secret_values())
    uvicorn.run(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
