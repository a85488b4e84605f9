"""The task endpoint's database steps (async): claim, renew, complete, fail, release, and
the takeover of tasks whose holder stopped.

Each is one statement guarded by the claim's token, so duplicate and late deliveries
cannot move a counter twice, nor change a later attempt (after retry-failed too). Each
runs in autocommit: one statement is atomic, and a row lock (the job's counters) is then
held for the statement and its commit only. They run on psycopg directly (core.db.hotsql:
one round trip per step, prepared), not SQLAlchemy; the sync takeover (the sweeper's
thread) stays on SQLAlchemy. Claims, completions and failures that arrive together on
one event loop share one statement over arrays (claim_tasks, end_tasks;
core.db.group_commit): row by row the same guards, each caller answered after the commit,
each job's counter moved once per statement by its number of rows. The job's
status follows its counters in the same statement (the SQL function job_tasks_ended in
sql/init_db.sql applies the rule of core.status spelled in SQL); the pure rule then checks
the result and repairs it if the two ever disagreed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import hotsql
from core.db.queries import q
from core.status import JOB_TERMINAL, job_status_after


@dataclass(frozen=True)
class Holder:
    """Who claims: the process (WORKER_ID, stable across its restarts) and this boot of it."""

    owner: str
    boot: UUID


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
    # Drawn by this claim; complete / fail / release / renew present it.
    token: UUID = field(default_factory=uuid4)
    free_attempts: int = 0  # attempts given back (rate limits within budget, stops)
    rate_limited_for_s: float | None = None  # length of the current rate-limit streak
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
    due_in_s: float = 0.0  # queued: seconds until next_attempt_at
    lease_expired: bool = False
    free_attempts: int = 0


@dataclass(frozen=True)
class TakenOver:
    """A task whose holder stopped: ``status`` is where it went (queued / pending to be
    delivered again, failed as worker_crashed)."""

    id: UUID
    job_id: UUID
    status: str
    dispatch_generation: int
    crashes: int
    attempts: int


async def claim(
    engine: AsyncEngine, task_id: UUID, *, lease_s: float, holder: Holder, max_attempts: int,
    attempt_floor: int = 0,
) -> ClaimedTask | None:
    # The claim is one statement, atomic on its own: autocommit spares BEGIN and COMMIT;
    # claims that arrive together share it (claim_tasks, core.db.group_commit).
    token = uuid4()
    m = await (await hotsql.get(engine)).grouped("claim_tasks", {
        "lease_s": lease_s, "owner": holder.owner, "boot": holder.boot,
        "max_attempts": max_attempts,
    }, {"task_id": task_id, "token": token, "attempt_floor": attempt_floor})
    if m is None or m["claim_token"] != token:
        return None
    return ClaimedTask(
        id=m["id"], job_id=m["job_id"], prompt=m["prompt"], style=m["style"],
        attempt=m["attempts"], prompt_index=m["prompt_index"], image_index=m["image_index"],
        provider=m["provider"], model=m["model"], size=m["size"], quality=m["quality"],
        token=token, free_attempts=m["free_attempts"],
        rate_limited_for_s=m["rate_limited_for_s"],
        output_format=m.get("output_format"), output_compression=m.get("output_compression"),
        background=m.get("background"), moderation=m.get("moderation"),
    )


async def state(engine: AsyncEngine, task_id: UUID) -> TaskState | None:
    row = await (await hotsql.get(engine)).one("task_state", {"task_id": task_id})
    if row is None:
        return None
    return TaskState(status=row["status"], attempts=row["attempts"],
                     lease_left_s=float(row["lease_left_s"] or 0.0),
                     due_in_s=float(row["due_in_s"] or 0.0),
                     lease_expired=bool(row["lease_expired"]),
                     free_attempts=row["free_attempts"])


async def renew(engine: AsyncEngine, task: ClaimedTask, *, lease_s: float) -> bool:
    """Extend this delivery's lease; False if the lease is no longer ours (lost)."""
    return bool(await (await hotsql.get(engine)).count("renew_lease", {
        "task_id": task.id, "token": task.token, "lease_s": lease_s}))


async def take_over_abandoned(
    engine: AsyncEngine,
    *,
    max_attempts: int,
    to_status: str = "queued",
    holder: Holder | None = None,
    task_ids: list[UUID] | None = None,
    limit: int = 1000,
) -> list[TakenOver]:
    """Free tasks whose holder stopped (rule: core.delivery.leases.crash_verdict).

    Without ``holder``: running rows whose lease expired. With it: running rows of a
    previous boot of ``holder.owner``, live lease or not (called once at start, also frees
    the local dispatcher's holds). Each row goes back to ``to_status`` ('queued' for the
    local queue; 'pending' under a new dispatch generation for Cloud Tasks, whose caller
    enqueues the returned rows), or fails as worker_crashed at ``max_attempts``.
    """
    binds = _takeover_binds(max_attempts, to_status, holder, task_ids, limit)
    hot = await hotsql.get(engine)
    if holder is None:
        rows = await hot.all("take_over_abandoned", binds)
    else:
        # Independent steps: sent together, one round trip.
        rows, _ = await hot.pipeline([
            ("take_over_abandoned", binds),
            ("free_dispatch_holds", {"owner": holder.owner, "boot": holder.boot})])
    return [_taken(r) for r in rows]


def take_over_abandoned_sync(
    engine: Engine,
    *,
    max_attempts: int,
    to_status: str = "pending",
    task_ids: list[UUID] | None = None,
    limit: int = 1000,
) -> list[TakenOver]:
    """take_over_abandoned for expired leases, on a synchronous engine (the sweeper's
    thread). Cloud Tasks mode: rows come back 'pending' under a new dispatch generation;
    the caller enqueues those whose status is 'pending'."""
    binds = _takeover_binds(max_attempts, to_status, None, task_ids, limit)
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        rows = conn.execute(q("take_over_abandoned"), binds).all()
    return [_taken(r._mapping) for r in rows]


def _takeover_binds(max_attempts: int, to_status: str, holder: Holder | None,
                    task_ids: list[UUID] | None, limit: int) -> dict[str, Any]:
    if to_status not in ("queued", "pending"):
        raise ValueError(f"to_status must be queued or pending, not {to_status!r}")
    return {"max_attempts": max_attempts, "to_status": to_status,
            "owner": holder.owner if holder else None,
            "boot": holder.boot if holder else None, "task_ids": task_ids, "limit": limit}


def _taken(r: Any) -> TakenOver:
    return TakenOver(id=r["id"], job_id=r["job_id"], status=r["status"],
                     dispatch_generation=r["dispatch_generation"], crashes=r["crashes"],
                     attempts=r["attempts"])


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
    return await _end(engine, task, "succeeded", latency_ms, image_path=image_path,
                      thumbnail_path=thumbnail_path, input_tokens=input_tokens,
                      output_tokens=output_tokens)


async def fail(
    engine: AsyncEngine, task: ClaimedTask, *, code: str, message: str, latency_ms: int | None
) -> bool:
    """Mark the task failed for good; False if this delivery no longer owns it."""
    return await _end(engine, task, "failed", latency_ms, error_code=code,
                      error_message=message)


# What end_tasks takes of each row beside its task, token, status and latency: every row of
# a group statement carries every column, NULL where it has nothing to say.
_END_VALUES = dict.fromkeys(("image_path", "thumbnail_path", "input_tokens", "output_tokens",
                             "error_code", "error_message"))


async def _end(engine: AsyncEngine, task: ClaimedTask, status: str, latency_ms: int | None,
               **values: Any) -> bool:
    # Successes and failures that arrive together share one statement (end_tasks,
    # core.db.group_commit); the job's status follows from the counters it returns.
    hot = await hotsql.get(engine)
    job = await hot.grouped("end_tasks", {}, {
        "task_id": task.id, "token": task.token, "status": status, "latency_ms": latency_ms,
        **_END_VALUES, **values})
    if job is None:
        return False
    await _follow_counters(hot, job)
    return True


async def release(
    engine: AsyncEngine, task: ClaimedTask, *, code: str, message: str, delay_s: float,
    latency_ms: int | None, free_attempt: bool = False, rate_limited: bool = False,
) -> bool:
    """Give the task back to the queue, due in ``delay_s`` (a retryable failure, or a
    stop); ``free_attempt`` gives the attempt back. False if this delivery no longer owns
    it."""
    return bool(await (await hotsql.get(engine)).count("release_task", {
        "task_id": task.id, "token": task.token, "error_code": code,
        "error_message": message, "delay_s": delay_s, "latency_ms": latency_ms,
        "free_attempt": free_attempt, "rate_limited": rate_limited,
    }))


async def _follow_counters(hot: hotsql.HotPool, job: hotsql.Row) -> None:
    # The SQL moved the status with the counter; a second statement only if it disagrees
    # with the pure rule (never, unless the two were changed apart).
    new_status = job_status_after(
        job["status"], total=job["total_tasks"], completed=job["completed_tasks"],
        failed=job["failed_tasks"], cancelled=job["cancelled_tasks"],
    )
    if new_status != job["status"]:
        await hot.count("set_job_status", {
            "job_id": job["id"], "old_status": job["status"], "new_status": new_status,
            "terminal": new_status in JOB_TERMINAL,
        })
