"""At start the worker checks that its own task URL answers (not 404, not refused).

A wrong WORKER_URL otherwise shows only once deliveries fail. The check GETs the task URL
derived from WORKER_URL (core.worker_url): the route is POST-only, so our handler answers
405, which proves the path reaches it. 404 or a refused connection means deliveries will
not arrive: said at ERROR with the URL, and shown by /healthz until the next start.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from fastapi import FastAPI

from core import worker_url
from core.config import Settings
from core.dispatch import undeliverable
from core.stopping import stopped_within

log = logging.getLogger(__name__)

TRIES = 5
TRY_INTERVAL_S = 1.0


def own_task_url(settings: Settings) -> str:
    return worker_url.task_url(settings.WORKER_URL or f"http://127.0.0.1:{settings.PORT}")


async def run(app: FastAPI, settings: Settings, stop: asyncio.Event) -> None:
    url = own_task_url(settings)
    app.state.self_check = None
    problem: str | None = None
    async with httpx.AsyncClient(timeout=2.0) as client:
        for _ in range(TRIES):
            # The first try may come before uvicorn listens: wait a little each time.
            if await stopped_within(stop, TRY_INTERVAL_S):
                return
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                cause = undeliverable.classify(url, error=exc)
                problem = cause.detail if cause else f"{type(exc).__name__} from {url}"
                continue
            if response.status_code == 404:
                problem = (f"HTTP 404 from {url}: no task handler there (check WORKER_URL: "
                           "the service base URL or the full task URL)")
            else:
                problem = None
            break
    if problem is None:
        log.info("task URL answers", extra={"action": "self_check_ok", "url": url})
        return
    app.state.self_check = f"start-up check: {problem}"
    log.error("this worker's task URL does not answer: %s", problem,
              extra={"action": "self_check_failed", "url": url})
