"""The worker's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from core import db, metrics
from core.config import Settings, get_settings
from core.dispatch import get_dispatcher
from core.dispatch.local_loop import LocalDispatchLoop
from core.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from core.processing import TaskProcessor
from core.providers import close_providers, get_provider
from core.storage import get_storage
from core.sweeper import sweep_pending, sweep_stranded
from worker.background import notify_forever, retention_forever
from worker.body_limit import BodyLimitMiddleware
from worker.routes import admin, health, tasks, team

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
        app.state.processor = TaskProcessor(
            settings, engine, lambda name: get_provider(name, settings), app.state.storage,
            on_finished=metrics.record_delivery,
        )
        app.state.oidc_verifier = _oidc_verifier(settings)
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        if not settings.USE_CLOUD_TASKS and settings.RUN_DISPATCHER:
            worker_url = settings.WORKER_URL or f"http://127.0.0.1:{settings.PORT}"
            loop = LocalDispatchLoop(settings, engine, worker_url)
            app.state.dispatch_loop = loop
            background.append(asyncio.create_task(loop.run(stop)))
        background.append(asyncio.create_task(_sweep_forever(settings, stop)))
        background.append(asyncio.create_task(notify_forever(settings, stop)))
        background.append(asyncio.create_task(
            retention_forever(settings, app.state.storage, stop)))
        log.info("worker started", extra={"action": "worker_start",
                                          "provider": settings.provider_name,
                                          "storage": settings.storage_name,
                                          "queue": "cloud_tasks" if settings.USE_CLOUD_TASKS
                                          else "local"})
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await close_providers()
            await engine.dispose()

    app = FastAPI(
        title="AIWebImageService worker",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.ENVIRONMENT != "production" else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.CORS_ORIGINS, allow_credentials=False,
            allow_methods=["GET", "POST"], allow_headers=["X-API-Key", "Authorization",
                                                          "Content-Type"],
        )
    _install_error_handlers(app)
    app.include_router(admin.router)
    app.include_router(team.router)
    app.include_router(tasks.router)
    app.include_router(health.router)
    return app


def _oidc_verifier(settings: Settings) -> Any:
    if settings.ENVIRONMENT != "production" or not settings.USE_CLOUD_TASKS:
        return None
    from core.oidc import make_verifier

    return make_verifier(settings)


async def _sweep_forever(settings: Settings, stop: asyncio.Event) -> None:
    dispatcher = get_dispatcher(settings)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.SWEEP_INTERVAL_S)
        if stop.is_set():
            return
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
        log.warning("database unavailable: %s", type(exc).__name__,
                    extra={"action": "db_unavailable"})
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
