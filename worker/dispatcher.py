"""``python -m worker.dispatcher``: the local dispatcher as its own process.

For when the worker runs with RUN_DISPATCHER=false (several worker processes behind one
dispatcher, or a dispatcher restarted independently). It delivers to WORKER_URL.
"""

from __future__ import annotations

import asyncio
import signal

from core import db, logs, startup
from core.config import get_settings
from core.dispatch.local.loop import LocalDispatchLoop


async def run() -> None:
    settings = get_settings()
    if settings.USE_CLOUD_TASKS:
        raise SystemExit("USE_CLOUD_TASKS=true: Cloud Tasks dispatches, not this process")
    worker_url = settings.WORKER_URL or f"http://127.0.0.1:{settings.PORT}"
    engine = db.get_async_engine(db.resolve_database_url(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await LocalDispatchLoop(settings, engine, worker_url).run(stop)
    finally:
        await engine.dispose()


def main() -> None:
    # The same one-line start-up errors as the worker (core.startup).
    settings = startup.settings_or_exit("dispatcher")
    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.secret_values())
    with startup.exit_on_config_error("dispatcher"):
        startup.preflight(settings, database=True, provider=False)
    asyncio.run(run())


if __name__ == "__main__":
    main()
