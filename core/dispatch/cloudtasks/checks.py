"""The worker's frequent Cloud Tasks checks (every LEASE_CHECK_INTERVAL_S, default 10 s):

- at start, the queue's retry config, in one line (core.dispatch.cloudtasks.queue_check);
- running rows whose lease expired (their Cloud Run instance died): taken over, the
  attempt counted (``worker_crashed`` at MAX_ATTEMPTS), and handed to a new Cloud Task of
  the next generation, so such a task runs again within about a lease plus this interval,
  not after STRANDED_AFTER_S. Usually the queue is first: the dead delivery's retry met
  the live lease ("busy") and was handed over to a task due at the lease end; this check
  is the bound when it was not. One indexed read (generation_tasks_running_lease_idx)
  when there are none;
- pending rows (a restarted worker's boot clean-up hands its previous boot's rows back
  as pending under a new generation), enqueued now rather than at the general sweep;
- hand-overs a crash or a failed CreateTask left marked (core/dispatch/cloudtasks/handover.py);
- queued rows no delivery claimed, whose Cloud Task the queue says keeps failing before
  our handler (404, 401/403, unreachable): shown, and ended at UNDELIVERABLE_MAX_TRIES
  (core/dispatch/cloudtasks/undeliverable.py).

The stranded sweep (core.dispatch.cloudtasks.sweeper.sweep_stranded) stays for tasks the
queue itself lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import Settings
from core.db.queries import q
from core.delivery import statements
from core.dispatch import get_dispatcher
from core.dispatch.cloudtasks import undeliverable
from core.dispatch.cloudtasks.handover import Handover
from core.dispatch.cloudtasks.queue_check import log_queue_config
from core.dispatch.cloudtasks.sweeper import sweep_pending
from core.stopping import stopped_within

log = logging.getLogger(__name__)

# A lease this far past its end: the queue's own next delivery (scheduled at the lease end
# by a "busy" hand-over) has had its chance to take the row first.
EXPIRED_GRACE_S = 5.0
TAKEOVER_BATCH = 200


async def take_over_expired(settings: Settings, engine: AsyncEngine, handover: Handover,
                            *, grace_s: float = EXPIRED_GRACE_S) -> tuple[int, int]:
    """Take over running rows whose lease ended ``grace_s`` ago (core.delivery.statements: a crash
    and an attempt counted, ``worker_crashed`` at MAX_ATTEMPTS) and hand the rest to a new
    Cloud Task, due now. Returns (handed over, failed)."""
    async with engine.connect() as conn:
        ids = [r.id for r in (await conn.execute(q("expired_lease_ids"), {
            "grace_s": grace_s, "limit": TAKEOVER_BATCH})).all()]
    if not ids:
        return 0, 0
    taken = await statements.take_over_abandoned(
        engine, max_attempts=settings.MAX_ATTEMPTS, to_status="queued", task_ids=ids,
        limit=TAKEOVER_BATCH)
    handed = failed = 0
    for row in taken:
        if row.status == "failed":
            failed += 1
            continue
        result = await handover.hand_over(row.id, None)
        handed += result.state == "handed"
    if taken:
        log.warning("took over tasks whose worker stopped (lease expired)", extra={
            "action": "lease_takeover", "handed": handed, "failed": failed,
            "task_ids": [str(r.id) for r in taken][:20]})
    return handed, failed


async def run(settings: Settings, engine: AsyncEngine, stop: asyncio.Event) -> None:
    dispatcher = get_dispatcher(settings)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(log_queue_config, settings, dispatcher)
    handover = Handover(dispatcher, engine)  # type: ignore[arg-type]
    while not await stopped_within(stop, settings.LEASE_CHECK_INTERVAL_S):
        try:
            await take_over_expired(settings, engine, handover)
            await handover.finish_unfinished()
            # Rows a restarted worker freed at boot (pending, next generation) are due now:
            # not left for the slower general sweep.
            await asyncio.to_thread(sweep_pending, dispatcher)
            # A delivery target that answers 404 (or 401/403, or refuses) ends
            await undeliverable.check_undelivered(settings, engine, dispatcher)
        except Exception as exc:
            log.warning("Cloud Tasks check failed: %s", type(exc).__name__,
                        extra={"action": "cloud_check_error"})
