"""``python -m worker``: run the worker (and, locally, its dispatcher) with uvicorn."""

from __future__ import annotations

import uvicorn

from core import logs
from core.config import get_settings
from worker.app import create_app


def main() -> None:
    settings = get_settings()
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
