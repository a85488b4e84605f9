"""The sweeper: re-enqueues tasks left pending (enqueue cut off, process died)."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from core.db import transaction
from core.dispatch import Dispatcher, EnqueueResult, TaskRef
from core.queries import q

log = logging.getLogger(__name__)

# A batch being enqueued right now is younger than this; leave it to its submitter.
PENDING_GRACE_S = 30.0
SWEEP_BATCH = 1000


def sweep_pending(
    dispatcher: Dispatcher,
    *,
    engine: Engine | None = None,
    grace_s: float = PENDING_GRACE_S,
    max_tasks: int = 100_000,
) -> EnqueueResult:
    """Hand every task pending for longer than ``grace_s`` to the queue again."""
    total = EnqueueResult()
    while total.enqueued + total.already_enqueued + total.failed < max_tasks:
        with transaction(engine) as conn:
            rows = conn.execute(q("pending_tasks_for_sweep"),
                                {"grace_s": grace_s, "limit": SWEEP_BATCH}).all()
        if not rows:
            break
        result = dispatcher.enqueue([TaskRef(r.id, r.dispatch_generation) for r in rows])
        total.enqueued += result.enqueued
        total.already_enqueued += result.already_enqueued
        total.failed += result.failed
        total.errors.extend(result.errors[:5])
        if result.enqueued == 0:
            break  # nothing moved: the queue is refusing; try again next sweep
    if total.enqueued or total.failed:
        log.info("sweep re-enqueued pending tasks",
                 extra={"action": "sweep", "enqueued": total.enqueued, "failed": total.failed})
    return total
