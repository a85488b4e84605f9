"""``python -m worker``: run the worker (and, locally, its dispatcher) with uvicorn.

Before anything listens the start-up checks run (core.startup): a configuration mistake is
one line on stderr naming the variable, exit status 2, never a traceback. In production a
database schema older than the code stops the start the same way
(core.db.migrate.require_current); elsewhere the start upgrades it (worker.app).
"""

from __future__ import annotations

import uvicorn

from core import db, logs, startup
from core.db import migrate
from worker.app import create_app

PROGRAM = "worker"


def main() -> None:
    settings = startup.settings_or_exit(PROGRAM)
    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secret_values())
    with startup.exit_on_config_error(PROGRAM):
        provider_check = startup.preflight(settings, database=True, provider=True)
        if settings.ENVIRONMENT == "production":
            migrate.require_current(db.get_engine(db.resolve_database_url(settings)))
    app = create_app(settings)
    app.state.provider_check = provider_check
    uvicorn.run(
        app,
        host=settings.HOST,
        port=settings.PORT,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
