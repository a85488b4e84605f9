"""Who moves batches along.

- Locally: ``poll_forever``, an asyncio loop beside the local dispatcher in the worker's
  lifespan; every BATCH_POLL_S it runs one BatchRunner cycle (plan new batches, advance
  each open one) in a worker thread.
- Cloud Tasks: one scheduled Cloud Task per open batch, POSTing ``{"batch_id", "round"}``
  to POLL_PATH; the handler advances that batch and, while it is open, creates the next
  round's task ``BATCH_POLL_S`` later. Task names hash (batch, round), so a redelivered
  round re-creates the same next task (AlreadyExists), never a second chain. Submitting a
  batch-mode job schedules a planning task (``{"job_id"}``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.batch import memory
from core.batch.runner import AdvanceReport, BatchRunner, make_client
from core.config import Settings
from core.dispatch import get_dispatcher
from core.stopping import stopped_within
from core.storage import Storage
from core.worker_url import base_url

log = logging.getLogger(__name__)

POLL_PATH = "/api/admin/worker/batch-poll"


def runner_for(settings: Settings, engine: Engine, storage: Storage) -> BatchRunner:
    return BatchRunner(settings, engine, make_client(settings), storage,
                       get_dispatcher(settings))


async def poll_forever(runner: BatchRunner, stop: asyncio.Event, interval_s: float) -> None:
    """The local poller: a cycle, then wait ``interval_s`` (or until stop)."""
    halt = threading.Event()  # tells a cycle in its thread to stop between lines
    runner.halt = halt
    # One thread of its own, reused: the ingest's multi-MB buffers then come from one
    # malloc arena instead of one per pool thread that happened to run a cycle (each arena
    # keeps its peak: measured +20 MB of RSS in the worker without this).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-poller")
    memory.return_large_blocks()
    loop = asyncio.get_running_loop()
    try:
        await _loop(runner, stop, interval_s, halt, lambda: loop.run_in_executor(
            executor, runner.cycle))
    finally:
        executor.shutdown(wait=False)


async def _loop(runner: BatchRunner, stop: asyncio.Event, interval_s: float,
                halt: threading.Event, start_cycle: Any) -> None:
    while not stop.is_set():
        cycle = asyncio.ensure_future(start_cycle())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({cycle, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            halt.set()
        try:
            await cycle
        except Exception as exc:  # the next round retries; a bad round must not end the loop
            log.warning("batch poll failed: %s: %s", type(exc).__name__, str(exc)[:300],
                        extra={"action": "batch_poll_error"})
        stopper.cancel()
        await stopped_within(stop, interval_s)


# -- Cloud Tasks ----------------------------------------------------------------------

def poll_task_name(key: str, round_no: int) -> str:
    digest = hashlib.sha256(f"batch-poll:{key}:{round_no}".encode()).hexdigest()
    return f"{digest[:32]}-p{round_no}"


def schedule(settings: Settings, body: dict[str, Any], *, round_no: int, delay_s: float,
             client: Any = None) -> None:
    """Create the Cloud Task that delivers ``body`` to POLL_PATH ``delay_s`` from now."""
    from google.api_core import exceptions as gexc
    from google.cloud import tasks_v2
    from google.protobuf import timestamp_pb2

    from core.dispatch.cloudtasks import dispatcher

    client = client or dispatcher.make_client(settings)
    assert settings.GCP_PROJECT and settings.WORKER_URL
    parent = client.queue_path(settings.GCP_PROJECT, settings.GCP_LOCATION, settings.QUEUE_NAME)
    service = base_url(settings.WORKER_URL)  # either form of WORKER_URL
    request = tasks_v2.HttpRequest(http_method=tasks_v2.HttpMethod.POST,
                                   url=service + POLL_PATH,
                                   headers={"Content-Type": "application/json"},
                                   body=json.dumps({**body, "round": round_no}).encode())
    if settings.CLOUD_TASKS_SERVICE_ACCOUNT:
        request.oidc_token = tasks_v2.OidcToken(
            service_account_email=settings.CLOUD_TASKS_SERVICE_ACCOUNT, audience=service)
    when = timestamp_pb2.Timestamp()
    when.FromSeconds(int(time.time() + delay_s))
    key = str(body.get("batch_id") or body.get("job_id"))
    task = tasks_v2.Task(name=f"{parent}/tasks/{poll_task_name(key, round_no)}",
                         http_request=request, schedule_time=when)
    with contextlib.suppress(gexc.AlreadyExists):  # this round is already scheduled
        client.create_task(parent=parent, task=task, timeout=30.0)


def handle_poll(runner: BatchRunner, *, batch_id: UUID | None, job_id: UUID | None,
                round_no: int, schedule_next: bool = True) -> dict[str, Any]:
    """One Cloud Tasks delivery: plan a job's batches, or advance one batch; schedule what
    comes next. (In a worker thread.)"""
    settings = runner.settings
    reports: list[AdvanceReport] = []
    rows: list[UUID] = []
    if job_id is not None:
        rows = runner.plan(job_id)
    if batch_id is not None:
        report = runner.advance(batch_id)
        reports.append(report)
        rows += report.new_batches
        if schedule_next and report.state not in ("done", "gone"):
            schedule(settings, {"batch_id": str(batch_id)}, round_no=round_no + 1,
                     delay_s=settings.BATCH_POLL_S)
    if schedule_next:
        for row in rows:  # new batches start their own chains
            schedule(settings, {"batch_id": str(row)}, round_no=0, delay_s=0)
    return {"planned": [str(r) for r in rows],
            "states": [r.state for r in reports]}
