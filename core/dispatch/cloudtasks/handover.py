"""Cloud Tasks mode: the table decides every retry; Cloud Tasks only carries.

A delivery that does not finish its task (outcome retry, busy or not_due) is not answered
non-2xx for the queue to retry on its own schedule: that schedule (the queue's backoff and
max_attempts) knows nothing of a provider's Retry-After or of a live lease, and a queue
created the guide's way (Cloud Tasks' defaults, 0.1 s doubling) would spend its attempts
in seconds and drop the task. Instead the delivery hands the task over to a NEW named
Cloud Task of the next dispatch generation, scheduled at the row's next_attempt_at (or at
the end of the live lease another delivery holds), and only then answers 2xx.

The hand-over is an outbox in two statements around CreateTask:

1. ``mark_handover`` notes the generation about to be created (handover_generation), only
   if the delivery's generation is still current;
2. CreateTask with the deterministic name of (task id, generation): a repeat is answered
   AlreadyExists, so creating twice is impossible whoever retries;
3. ``finish_handover`` moves the row to that generation.

A crash between 1 and 3 leaves the mark: ``finish_unfinished`` (the worker's frequent
check) completes it. If CreateTask fails, the delivery is answered 503 so the queue
retries it (the mark is the backstop). A delivery carrying an older generation's name is
superseded: answered 200, nothing changes. The queue's own retries so only cover
deliveries that never reached the handler (instance starting, connection lost, database
down), which is what its RetryConfig is for.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.queries import q
from core.dispatch.base import TaskRef
from core.dispatch.cloudtasks.dispatcher import task_id_for

log = logging.getLogger(__name__)

# Outcomes of core.delivery.processing that leave the task unfinished: each becomes a new
# Cloud Task.
HANDOVER_OUTCOMES = frozenset({"retry", "busy", "not_due"})
# A mark older than this, with no hand-over finished, was cut short (a delivery takes
# well under this between its mark and its CreateTask answer).
UNFINISHED_GRACE_S = 20.0
UNFINISHED_BATCH = 200

_NAME = re.compile(r"^(?P<digest>[0-9a-f]{32})-g(?P<generation>\d+)$")


class TaskCreator(Protocol):
    def create_one(self, ref: TaskRef, *, delay_s: float = 0.0) -> tuple[str, str, str]: ...


def generation_of(task_id: UUID, task_name: str | None) -> int | None:
    """The dispatch generation a delivery carries (pure), from X-CloudTasks-TaskName (the
    short name ``<hash>-g<generation>``, core.dispatch.cloudtasks.dispatcher.task_id_for). None when
    the name is not one of ours for this task (an emulator's or a hand-made task)."""
    if not task_name:
        return None
    match = _NAME.match(task_name.rsplit("/", 1)[-1])
    if match is None:
        return None
    generation = int(match["generation"])
    if task_id_for(TaskRef(task_id, generation)) != match.group(0):
        return None
    return generation


def is_superseded(delivered: int | None, current: int | None) -> bool:
    """A delivery of an older generation than the row's (pure). A newer one is a
    hand-over whose row update a crash cut short: it is current."""
    return delivered is not None and current is not None and delivered < current


@dataclass(frozen=True)
class HandoverResult:
    state: str  # handed | superseded | failed
    generation: int | None = None
    due_in_s: float | None = None
    error: str = ""


class Handover:
    def __init__(self, creator: TaskCreator, engine: AsyncEngine) -> None:
        self.creator = creator
        self.engine = engine

    async def superseded(self, task_id: UUID, generation: int | None) -> bool:
        if generation is None:
            return False
        async with _autocommit(self.engine).connect() as conn:
            row = (await conn.execute(q("task_generation"), {"task_id": task_id})).first()
        return row is not None and is_superseded(generation, row.dispatch_generation)

    async def hand_over(self, task_id: UUID, generation: int | None) -> HandoverResult:
        """Create the next generation's Cloud Task at the row's due time, then record it."""
        async with _autocommit(self.engine).connect() as conn:
            row = (await conn.execute(q("mark_handover"), {
                "task_id": task_id, "generation": generation})).first()
        if row is None:
            # Finished meanwhile, or a newer generation already carries it.
            return HandoverResult("superseded")
        return await self._create_and_record(task_id, row.handover_generation,
                                             float(row.due_in_s))

    async def _create_and_record(self, task_id: UUID, generation: int, due_in_s: float
                                 ) -> HandoverResult:
        state, name, error = await asyncio.to_thread(
            self.creator.create_one, TaskRef(task_id, generation), delay_s=due_in_s)
        if state == "failed":
            log.warning("could not hand the task over to a new Cloud Task: %s", error,
                        extra={"action": "handover_failed", "task_id": str(task_id),
                               "dispatch_generation": generation})
            return HandoverResult("failed", generation, due_in_s, error)
        async with _autocommit(self.engine).connect() as conn:
            await conn.execute(q("finish_handover"), {
                "task_id": task_id, "generation": generation, "name": name})
        log.info("next attempt handed to Cloud Tasks", extra={
            "action": "handover", "task_id": str(task_id), "dispatch_generation": generation,
            "due_in_s": round(due_in_s, 3), "cloud_task_name": name,
            "already_existed": state == "exists"})
        return HandoverResult("handed", generation, due_in_s)

    async def finish_unfinished(self, *, grace_s: float = UNFINISHED_GRACE_S,
                                limit: int = UNFINISHED_BATCH) -> int:
        """Complete hand-overs a crash or a failed CreateTask left marked; returns how many
        were handed over."""
        async with _autocommit(self.engine).connect() as conn:
            await conn.execute(q("drop_finished_handovers"), {"grace_s": grace_s})
            rows = (await conn.execute(q("unfinished_handovers"),
                                       {"grace_s": grace_s, "limit": limit})).all()
        handed = 0
        for row in rows:
            result = await self._create_and_record(row.id, row.handover_generation,
                                                   float(row.due_in_s))
            handed += result.state == "handed"
        if rows:
            log.info("finished hand-overs cut short", extra={
                "action": "handover_recovered", "found": len(rows), "handed": handed})
        return handed


def answer_for(outcome_body: dict[str, Any], result: HandoverResult
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What the endpoint answers after a hand-over (pure): 200 once the next Cloud Task
    exists (or a newer generation carries the task), else 503 so the queue retries this
    delivery."""
    body = dict(outcome_body)
    if result.state == "failed":
        body["handover"] = "failed"
        # No Retry-After: it would slow the whole queue; its own backoff retries this one.
        return 503, body, {}
    body["handover"] = result.state
    if result.generation is not None:
        body["next_generation"] = result.generation
    if result.due_in_s is not None:
        body["next_attempt_in_s"] = round(result.due_in_s, 3)
    return 200, body, {}


@lru_cache(maxsize=8)
def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")
