"""The worker's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from core import db, metrics
from core.batch import poller as batch_poller
from core.config import Settings, get_settings
from core.db import hotsql
from core.delivery import leases, statements
from core.delivery.processing import TaskProcessor, default_holder
from core.dispatch import get_dispatcher
from core.dispatch.cloudtasks.sweeper import sweep_pending, sweep_stranded
from core.dispatch.local.loop import LocalDispatchLoop
from core.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from core.providers import close_providers, get_provider
from core.stopping import stopped_within
from core.storage import get_storage, thumbnails
from worker import body_limit, self_check
from worker.background import notify_forever, retention_forever, spend_forever
from worker.fast_task import FastTaskPath
from worker.refusals import RefusedDeliveries
from worker.routes import admin, batch_poll, batches, exports, health, tasks, team

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = db.resolve_database_url(settings)
        if settings.ENVIRONMENT != "production":
            await asyncio.to_thread(db.apply_schema, db.get_engine(url))
        engine = db.get_async_engine(url)
        app.state.engine = engine
        app.state.storage = get_storage(settings)
        # A writer killed between write and rename leaves a temporary file behind.
        sweep_temp = getattr(app.state.storage, "remove_orphaned_temp_files", None)
        if sweep_temp is not None:
            await asyncio.to_thread(sweep_temp)
        holder = default_holder(settings)
        processor = TaskProcessor(
            settings, engine, lambda name: get_provider(name, settings), app.state.storage,
            on_finished=metrics.record_delivery, holder=holder,
        )
        app.state.processor = processor
        app.state.oidc_verifier = _oidc_verifier(settings)
        await _free_previous_boot(settings, engine, holder)
        await hotsql.warm(engine)  # opened in the background; nothing waits for them here
        # Through anyio, whose asyncio backend the sync routes' thread pool imports on its
        # first use: both costs are paid here, not by the first deliveries and requests.
        await anyio.to_thread.run_sync(thumbnails.warm)
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        stopping: list[asyncio.Task[int]] = []

        def begin_stop() -> None:
            # SIGTERM / Ctrl-C: the dispatcher stops claiming and the task endpoint stops
            # taking deliveries now; in-flight work gets SHUTDOWN_GRACE_S, then is released.
            if stop.is_set():
                return
            log.info("stopping: no new deliveries; in-flight ones finish or are released",
                     extra={"action": "worker_stopping", "in_flight": processor.in_flight(),
                            "grace_s": settings.SHUTDOWN_GRACE_S})
            stop.set()
            stopping.append(asyncio.create_task(
                processor.finish_or_release(settings.SHUTDOWN_GRACE_S)))

        restore = _on_stop_signals(begin_stop)
        if not settings.USE_CLOUD_TASKS and settings.RUN_DISPATCHER:
            worker_url = settings.WORKER_URL or f"http://127.0.0.1:{settings.PORT}"
            loop = LocalDispatchLoop(settings, engine, worker_url, holder=holder)
            app.state.dispatch_loop = loop
            background.append(asyncio.create_task(loop.run(stop)))
        background.append(asyncio.create_task(_sweep_forever(settings, stop)))
        if settings.USE_CLOUD_TASKS:  # queue config line, expired leases, hand-overs
            from core.dispatch.cloudtasks import checks
            from core.dispatch.cloudtasks.window import get_refiller

            # The Cloud Tasks window is refilled after each finished task
            # (core.dispatch.cloudtasks.window).
            app.state.refiller = get_refiller(settings, db.get_engine(url))

            background.append(asyncio.create_task(checks.run(settings, engine, stop)))
        # Does WORKER_URL reach this worker's task handler? (worker.self_check)
        background.append(asyncio.create_task(self_check.run(app, settings, stop)))
        if settings.provider_name == "openai":
            # Batch mode (core/batch): the runner serves the Cloud Tasks poll route; locally
            # a poller loop runs beside the dispatcher.
            app.state.batch_runner = batch_poller.runner_for(settings, db.get_engine(url),
                                                             app.state.storage)
            if not settings.USE_CLOUD_TASKS and settings.RUN_DISPATCHER:
                background.append(asyncio.create_task(batch_poller.poll_forever(
                    app.state.batch_runner, stop, settings.BATCH_POLL_S)))
        background.append(asyncio.create_task(notify_forever(settings, stop)))
        background.append(asyncio.create_task(spend_forever(settings, stop)))
        background.append(asyncio.create_task(
            retention_forever(settings, app.state.storage, stop)))
        log.info("worker started", extra={"action": "worker_start",
                                          "provider": settings.provider_name,
                                          "storage": settings.storage_name,
                                          "queue": "cloud_tasks" if settings.USE_CLOUD_TASKS
                                          else "local",
                                          "worker_id": holder.owner,
                                          "lease_s": settings.lease_s,
                                          "renew_every_s": leases.renew_every_s(settings),
                                          "shutdown_grace_s": settings.SHUTDOWN_GRACE_S,
                                          "dispatch_deadline_s": settings.DISPATCH_DEADLINE_S,
                                          "demo_latency_ms": settings.DEMO_LATENCY_MS})
        try:
            yield
        finally:
            restore()
            begin_stop()
            cut = sum(await asyncio.gather(*stopping))
            await asyncio.gather(*background, return_exceptions=True)
            log.info("worker stopped", extra={"action": "worker_stop", "released": cut})
            if getattr(app.state, "batch_runner", None) is not None:
                app.state.batch_runner.close()
            await close_providers()
            await hotsql.close(engine)
            await engine.dispose()

    app = FastAPI(
        title="AIWebImageService worker",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.ENVIRONMENT != "production" else None,
        redoc_url=None,
    )
    app.state.settings = settings
    body_limit.install(app, settings.MAX_BODY_BYTES)
    if settings.USE_CLOUD_TASKS:  # refused Cloud Tasks deliveries are shown
        app.add_middleware(RefusedDeliveries)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.CORS_ORIGINS, allow_credentials=False,
            allow_methods=["GET", "POST"], allow_headers=["X-API-Key", "Authorization",
                                                          "Content-Type"],
        )
    # Outermost: the local dispatcher's deliveries skip the framework (worker/fast_task.py);
    # everything else, and any doubt, goes on to FastAPI.
    app.add_middleware(FastTaskPath)
    _install_error_handlers(app)
    # FastAPI stops a body over MAX_BODY_BYTES as it arrives (worker/body_limit.py).
    for router in (admin.router, exports.router, team.router, tasks.router,
                   batch_poll.router, batches.router, health.router):
        app.include_router(router, max_body_size=settings.MAX_BODY_BYTES)
    return app


async def _free_previous_boot(settings: Settings, engine: Any,
                              holder: statements.Holder) -> None:
    """A restarted process frees what its previous boot held (it died or was killed):
    running tasks count a crash and are delivered again at once (or fail as worker_crashed
    at MAX_ATTEMPTS), and the dispatcher's holds are dropped. Only with an owner id that
    survives a restart (never on Cloud Run's shared hostname:port)."""
    _, stable = leases.worker_owner(worker_id=settings.WORKER_ID,
                                    on_cloud_run=bool(settings.K_SERVICE), hostname="",
                                    port=settings.PORT, boot="")
    if not stable:
        return
    try:
        taken = await statements.take_over_abandoned(
            engine, max_attempts=settings.MAX_ATTEMPTS, holder=holder,
            to_status="pending" if settings.USE_CLOUD_TASKS else "queued")
    except (DBAPIError, OSError) as exc:
        log.warning("could not free the previous boot's tasks: %s", type(exc).__name__,
                    extra={"action": "boot_cleanup_error"})
        return
    if taken:
        log.warning("freed tasks held by this worker's previous boot",
                    extra={"action": "boot_cleanup", "owner": holder.owner,
                           "requeued": sum(1 for t in taken if t.status != "failed"),
                           "failed": sum(1 for t in taken if t.status == "failed")})


def _on_stop_signals(callback: Any) -> Any:
    """Run ``callback`` on the event loop when SIGTERM or SIGINT arrives, before the
    server's own handler (which then stops accepting connections and waits for the
    in-flight requests). Returns a function restoring the previous handlers."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (a test client): no signals to catch
            return lambda: None

    def restore() -> None:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, old)

    return restore


def _oidc_verifier(settings: Settings) -> Any:
    if settings.ENVIRONMENT != "production" or not settings.USE_CLOUD_TASKS:
        return None
    from core.dispatch.cloudtasks.oidc import make_verifier

    return make_verifier(settings)


async def _sweep_forever(settings: Settings, stop: asyncio.Event) -> None:
    dispatcher = get_dispatcher(settings)
    while not await stopped_within(stop, settings.SWEEP_INTERVAL_S):
        try:
            await asyncio.to_thread(sweep_pending, dispatcher)
            if settings.USE_CLOUD_TASKS:
                await asyncio.to_thread(sweep_stranded, dispatcher,
                                        stale_s=settings.STRANDED_AFTER_S)
        except Exception as exc:
            log.warning("sweep failed: %s", type(exc).__name__, extra={"action": "sweep_error"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "detail": [{"loc": ["body", *exc.field.replace("[", ".").replace("]", "").split(".")],
                        "msg": exc.message, "type": "value_error"}],
            "field": exc.field, "message": exc.message,
        })

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            errors.append({"loc": loc, "msg": str(err.get("msg", "invalid")),
                           "type": str(err.get("type", "value_error"))})
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = ".".join(p for p in first["loc"] if p != "body") or "body"
        return JSONResponse(status_code=422, content={
            "detail": errors, "field": field, "message": f"{field}: {first['msg']}",
        })

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": exc.message})

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": exc.message})

    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        # The SQLSTATE tells a deadlock or a timeout from a server that is down; the
        # message itself may carry parameters, so it is not logged.
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        log.warning("database unavailable: %s%s", type(exc).__name__,
                    f" (SQLSTATE {sqlstate})" if sqlstate else "",
                    extra={"action": "db_unavailable", "sqlstate": sqlstate})
        return JSONResponse(status_code=503, content={"detail": "database unavailable"},
                            headers={"Retry-After": "5"})

    app.add_exception_handler(DatabaseUnavailable, _db_down)
    app.add_exception_handler(OperationalError, _db_down)

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _db_down(request, exc)
        log.error("database error: %s", type(exc.orig).__name__, extra={"action": "db_error"})
        return JSONResponse(status_code=500, content={"detail": "internal error"})
