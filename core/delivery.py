"""The task endpoint's database steps (async): claim, complete, fail, release.

Each is one statement guarded by status and attempt, so duplicate and late deliveries
cannot move a counter twice. Each runs in autocommit: one statement is atomic, and a row
lock (the job's counters) is then held for the statement and its commit only. The job's
status follows its counters in the same statement (complete_task / fail_task spell the
rule of core.status in SQL); the pure rule then checks the result and repairs it if the
two ever disagreed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.queries import q
from core.status import JOB_TERMINAL, job_status_after


@dataclass(frozen=True)
class ClaimedTask:
    id: UUID
    job_id: UUID
    prompt: str
    style: str
    attempt: int
    prompt_index: int
    image_index: int
    provider: str
    model: str
    size: str
    quality: str
    # The job's image options (version 5); None = the API's default.
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None

    def image_params(self) -> dict[str, Any]:
        params = {"output_format": self.output_format,
                  "output_compression": self.output_compression,
                  "background": self.background, "moderation": self.moderation}
        return {k: v for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class TaskState:
    status: str
    attempts: int
    lease_left_s: float


async def claim(
    engine: AsyncEngine, task_id: UUID, *, lease_s: float, attempt_floor: int = 0
) -> ClaimedTask | None:
    # The claim is one statement, atomic on its own: autocommit spares BEGIN and COMMIT.
    async with _autocommit(engine).connect() as conn:
        row = (await conn.execute(q("claim_task"), {
            "task_id": task_id, "lease_s": lease_s, "attempt_floor": attempt_floor,
        })).first()
    if row is None:
        return None
    m = row._mapping
    return ClaimedTask(
        id=m["id"], job_id=m["job_id"], prompt=m["prompt"], style=m["style"],
        attempt=m["attempts"], prompt_index=m["prompt_index"], image_index=m["image_index"],
        provider=m["provider"], model=m["model"], size=m["size"], quality=m["quality"],
        output_format=m.get("output_format"), output_compression=m.get("output_compression"),
        background=m.get("background"), moderation=m.get("moderation"),
    )


async def state(engine: AsyncEngine, task_id: UUID) -> TaskState | None:
    async with engine.connect() as conn:
        row = (await conn.execute(q("task_state"), {"task_id": task_id})).first()
    if row is None:
        return None
    return TaskState(status=row.status, attempts=row.attempts,
                     lease_left_s=float(row.lease_left_s or 0.0))


async def complete(
    engine: AsyncEngine,
    task: ClaimedTask,
    *,
    image_path: str,
    thumbnail_path: str,
    latency_ms: int,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> bool:
    """Mark the task succeeded; False if this delivery no longer owns it."""
    async with _autocommit(engine).connect() as conn:
        job = (await conn.execute(q("complete_task"), {
            "task_id": task.id, "attempt": task.attempt, "image_path": image_path,
            "thumbnail_path": thumbnail_path, "latency_ms": latency_ms,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
        })).first()
        if job is None:
            return False
        await _follow_counters(conn, job)
    return True


async def fail(
    engine: AsyncEngine, task: ClaimedTask, *, code: str, message: str, latency_ms: int | None
) -> bool:
    """Mark the task failed for good; False if this delivery no longer owns it."""
    async with _autocommit(engine).connect() as conn:
        job = (await conn.execute(q("fail_task"), {
            "task_id": task.id, "attempt": task.attempt, "error_code": code,
            "error_message": message, "latency_ms": latency_ms,
        })).first()
        if job is None:
            return False
        await _follow_counters(conn, job)
    return True


async def release(
    engine: AsyncEngine, task: ClaimedTask, *, code: str, message: str, delay_s: float,
    latency_ms: int | None,
) -> bool:
    """Give the task back to the queue after a retryable failure."""
    async with _autocommit(engine).connect() as conn:
        result = await conn.execute(q("release_task"), {
            "task_id": task.id, "attempt": task.attempt, "error_code": code,
            "error_message": message, "delay_s": delay_s, "latency_ms": latency_ms,
        })
    return bool(result.rowcount)


@lru_cache(maxsize=8)
def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, checked out in autocommit mode (for single-statement steps)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def _follow_counters(conn: AsyncConnection, job: Any) -> None:
    new_status = job_status_after(
        job.status, total=job.total_tasks, completed=job.completed_tasks,
        failed=job.failed_tasks, cancelled=job.cancelled_tasks,
    )
    if new_status != job.status:
        await conn.execute(q("set_job_status"), {
            "job_id": job.id, "old_status": job.status, "new_status": new_status,
            "terminal": new_status in JOB_TERMINAL,
        })
