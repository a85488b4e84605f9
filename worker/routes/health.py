"""Health, metrics and, for local storage, the images themselves."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from sqlalchemy import text

from core import metrics
from core.db.queries import q
from core.dispatch import order_of_work, undeliverable
from core.errors import StorageError
from worker.responses import error_responses

router = APIRouter()


class Health(BaseModel):
    status: str  # ok | degraded
    database: str  # ok | unreachable
    queue: str | None = None  # local | cloud_tasks
    # ok | unauthenticated | unchecked (the start-up key check, core.startup)
    provider: str | None = None
    # Why the status is degraded, one line each (undeliverable deliveries, the start-up
    # self-check of the task URL, an unauthenticated provider). Never a secret.
    reasons: list[str] = []
    # Budgets (spent, limit, held) and jobs held at their spend cap
    spend: dict[str, list[dict[str, object]]] | None = None


_IMAGE = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                      "image/webp": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The image (local storage only)."}


@router.get("/healthz", tags=["health"], response_model=Health,
            responses={503: {"model": Health, "description": "The database is unreachable."}})
async def healthz(request: Request) -> JSONResponse:
    """503 only when the database is unreachable (this instance cannot work). A degraded
    status with reasons answers 200: restarting the instance would not fix a wrong URL or
    key, and the platform's health check must not kill a worker that reports them."""
    engine = request.app.state.engine
    state = request.app.state
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2.0)
            rows = (await conn.execute(q("recent_delivery_problems"), {
                "window_s": undeliverable.PROBLEM_WINDOW_S})).all()
            # Budgets and spend caps that hold dispatch (core.billing.spend)
            holds = (await conn.execute(q("spend_holds"))).all()
            capped = (await conn.execute(q("jobs_at_cap"), {"limit": 20})).all()
    except Exception:
        return JSONResponse({"status": "degraded", "database": "unreachable",
                             "reasons": ["the database is unreachable"]}, status_code=503)
    reasons = [undeliverable.reason(p) for p in undeliverable.recent_problems_rows(rows)]
    reasons += [order_of_work.budget_reason(h) for h in holds if h.held]
    reasons += [order_of_work.cap_reason(j) for j in capped]
    spend = {"budgets": [{"scope": h.scope, "held": h.held, "spent_usd": float(h.spent_usd),
                          "limit_usd": None if h.limit_usd is None else float(h.limit_usd)}
                         for h in holds],
             "jobs_at_cap": [{"id": str(j.id), "spent_usd": float(j.spent_usd),
                              "max_cost_usd": float(j.max_cost_usd)} for j in capped]}
    own = getattr(state, "self_check", None)
    if own:
        reasons.append(own)
    check = getattr(state, "provider_check", None)
    provider = "unchecked"
    if check is not None:
        provider = {True: "ok", False: "unauthenticated", None: "unchecked"}[
            check.authenticated]
        if check.authenticated is False:
            reasons.append(f"image provider {check.provider} is not authenticated: "
                           f"{check.reason}")
    return JSONResponse({"status": "degraded" if reasons else "ok", "database": "ok",
                         "queue": "cloud_tasks" if state.settings.USE_CLOUD_TASKS
                         else "local", "provider": provider, "reasons": reasons,
                         "spend": spend})


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def prometheus_metrics(request: Request) -> Response:
    try:
        async with request.app.state.engine.connect() as conn:
            rows = (await conn.execute(q("queue_depth"))).all()
            problems = (await conn.execute(q("recent_delivery_problems"), {
                "window_s": undeliverable.PROBLEM_WINDOW_S})).all()
        metrics.set_queue_depth({r.status: int(r.n) for r in rows})
        undeliverable.set_recent(undeliverable.recent_problems_rows(problems))
    except Exception:
        pass  # stale depth beats a failed scrape
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/images/{key:path}", tags=["images"], response_class=FileResponse,
            responses={200: _IMAGE, **error_responses(404)})
def local_image(key: str, request: Request) -> FileResponse:
    storage = request.app.state.storage
    if getattr(storage, "name", "") != "local":
        raise HTTPException(status_code=404, detail="images are served by the object store")
    try:
        path = storage.path_for(key)
    except StorageError:
        raise HTTPException(status_code=404, detail="not found") from None
    if not path.is_file():
        raise HTTPException(status_code=404, detail="not found")
    media = "image/webp" if path.suffix == ".webp" else "image/png"
    return FileResponse(path, media_type=media,
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
