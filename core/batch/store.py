"""The batch poller's database steps (sync; the poller runs them in a worker thread).

Every step is one short statement or transaction, committed before the call to OpenAI
that depends on it, so the row always says how far a batch got (crash safety,
docs/batch-mode.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, text

from core.db import transaction
from core.db.queries import q
from core.status import JOB_TERMINAL, job_status_after


@dataclass(frozen=True)
class BatchRow:
    id: UUID
    job_id: UUID
    state: str
    openai_status: str | None
    task_count: int
    input_file_id: str | None
    openai_batch_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    cancel_requested: bool
    polls: int
    job_status: str
    batch_fallback: str
    model: str


@dataclass(frozen=True)
class JobOptions:
    id: UUID
    status: str
    model: str
    size: str
    quality: str
    output_format: str | None
    output_compression: int | None
    background: str | None
    moderation: str | None
    batch_fallback: str

    def image_params(self) -> dict[str, Any]:
        params = {"output_format": self.output_format,
                  "output_compression": self.output_compression,
                  "background": self.background, "moderation": self.moderation}
        return {k: v for k, v in params.items() if v is not None}


def autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def advisory_lock(engine: Engine, key: str) -> Iterator[bool]:
    """A session advisory lock on ``key`` for the block (False: someone else holds it).
    A killed process's connection closes and PostgreSQL frees its lock with it."""
    with autocommit(engine).connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"),
                                {"k": key}).scalar())
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
                             {"k": key})


def jobs_to_plan(engine: Engine, limit: int = 100) -> list[UUID]:
    with autocommit(engine).connect() as conn:
        return [r.job_id for r in conn.execute(q("batch_jobs_to_plan"), {"limit": limit})]


def plan_job(engine: Engine, job_id: UUID, chunk_size: int, max_attempts: int
             ) -> tuple[list[UUID], list[UUID]]:
    """Group the job's unassigned tasks into new batch rows of at most ``chunk_size``, in
    one transaction under the job's row lock (two pollers never batch a task twice).
    Returns (new batch row ids, task ids out of attempts, to be failed by the caller)."""
    created: list[UUID] = []
    exhausted: list[UUID] = []
    with transaction(engine) as conn:
        job = conn.execute(q("batch_lock_job"), {"job_id": job_id}).first()
        if job is None or job.status not in ("pending", "running"):
            return created, exhausted
        while True:
            rows = conn.execute(q("batch_unassigned_tasks"),
                                {"job_id": job_id, "limit": chunk_size}).all()
            ready = [r.id for r in rows if r.attempts < max_attempts]
            exhausted += [r.id for r in rows if r.attempts >= max_attempts]
            if not ready:
                break
            batch_id = uuid.uuid4()
            conn.execute(q("batch_insert"), {"id": batch_id, "job_id": job_id,
                                             "task_count": len(ready)})
            conn.execute(q("batch_assign_tasks"), {"batch_id": batch_id, "ids": ready})
            created.append(batch_id)
            if len(rows) < chunk_size:
                break
        if created:
            conn.execute(q("batch_job_started"), {"job_id": job_id})
    return created, exhausted


def job_options(engine: Engine, job_id: UUID) -> JobOptions:
    with autocommit(engine).connect() as conn:
        row = conn.execute(text(
            "SELECT id, status, model, size, quality, output_format, output_compression, "
            "background, moderation, batch_fallback FROM generation_jobs WHERE id = :id"),
            {"id": job_id}).one()
    return JobOptions(**dict(row._mapping))


def open_rows(engine: Engine, limit: int = 1000) -> list[UUID]:
    with autocommit(engine).connect() as conn:
        return [r.id for r in conn.execute(q("batch_open_rows"), {"limit": limit})]


def load(engine: Engine, row_id: UUID) -> BatchRow | None:
    with autocommit(engine).connect() as conn:
        row = conn.execute(q("batch_row"), {"id": row_id}).first()
    return None if row is None else BatchRow(**dict(row._mapping))


def execute(engine: Engine, name: str, params: dict[str, Any]) -> int:
    with autocommit(engine).connect() as conn:
        return int(conn.execute(q(name), params).rowcount or 0)


def task_requests(engine: Engine, row_id: UUID) -> Iterator[Any]:
    """The batch's waiting tasks, streamed (server-side cursor) for the input file."""
    with transaction(engine) as conn:
        result = conn.execution_options(stream_results=True, yield_per=500).execute(
            q("batch_task_requests"), {"batch_id": row_id})
        yield from result


def waiting_task_ids(engine: Engine, row_id: UUID) -> set[UUID]:
    with autocommit(engine).connect() as conn:
        return {r.id for r in conn.execute(q("batch_waiting_task_ids"), {"batch_id": row_id})}


def task_attempts(engine: Engine, ids: Sequence[UUID]) -> dict[UUID, int]:
    with autocommit(engine).connect() as conn:
        rows = conn.execute(text("SELECT id, attempts FROM generation_tasks WHERE id = ANY(:ids)"),
                            {"ids": list(ids)})
        return {r.id: int(r.attempts) for r in rows}


def finish_task(engine: Engine, name: str, params: dict[str, Any]) -> bool:
    """complete_batch_task / fail_batch_task, then the job status rule's check (as
    core.delivery.statements does for the realtime path). False: the task was no longer waiting."""
    with autocommit(engine).connect() as conn:
        job = conn.execute(q(name), params).first()
        if job is None:
            return False
        _follow_counters(conn, job)
    return True


def _follow_counters(conn: Connection, job: Any) -> None:
    new_status = job_status_after(job.status, total=job.total_tasks,
                                  completed=job.completed_tasks, failed=job.failed_tasks,
                                  cancelled=job.cancelled_tasks)
    if new_status != job.status:
        conn.execute(q("set_job_status"), {"job_id": job.id, "old_status": job.status,
                                           "new_status": new_status,
                                           "terminal": new_status in JOB_TERMINAL})


def release(engine: Engine, row_id: UUID, ids: Sequence[UUID] | None, *, to: str,
            code: str, message: str) -> list[Any]:
    """Unfinished tasks leave the batch: ``to`` is 'batch' (the next plan takes them),
    'queued' (local realtime) or 'pending' (Cloud Tasks hand-over)."""
    params = {"batch_id": row_id, "ids": list(ids) if ids is not None else None,
              "error_code": code, "error_message": message}
    with autocommit(engine).connect() as conn:
        if to == "batch":
            return list(conn.execute(q("batch_release_to_new_batch"), params))
        return list(conn.execute(q("batch_release_to_realtime"), {**params, "status": to}))
