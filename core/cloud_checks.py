"""The worker's frequent Cloud Tasks checks (every LEASE_CHECK_INTERVAL_S, default 10 s):

- at start, the queue's retry config, in one line (core.dispatch.queue_check);
- running rows whose lease expired (their Cloud Run instance died): taken over, the
  attempt counted (``worker_crashed`` at MAX_ATTEMPTS), and handed to a new Cloud Task of
  the next generation, so such a task runs again within about a lease plus this interval,
  not after STRANDED_AFTER_S. A cheap indexed probe (generation_tasks_running_lease_idx)
  finds whether any exist before anything else is read;
- hand-overs a crash or a failed CreateTask left marked (core/dispatch/handover.py).

The stranded sweep (core.sweeper.sweep_stranded) stays for tasks the queue itself lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import Settings
from core.dispatch import get_dispatcher
from core.dispatch.handover import Handover
from core.dispatch.queue_check import log_queue_config
from core.queries import q

log = logging.getLogger(__name__)

# A lease this far past its end: the queue's own next delivery (scheduled at the lease end
# by a "busy" hand-over) has had its chance to take the row first.
EXPIRED_GRACE_S = 5.0
TAKEOVER_BATCH = 200


async def expired_leases_exist(engine: AsyncEngine, grace_s: float = EXPIRED_GRACE_S
                               ) -> bool:
    async with engine.connect() as conn:
        row = (await conn.execute(q("expired_leases_exist"), {"grace_s": grace_s})).one()
    return bool(row.found)


async def take_over_expired(settings: Settings, engine: AsyncEngine, handover: Handover,
                            *, grace_s: float = EXPIRED_GRACE_S) -> int:
    """Take over running rows whose lease ended ``grace_s`` ago; returns how many were
    handed over again (those failed ``worker_crashed`` need nothing more)."""
    if not await expired_leases_exist(engine, grace_s):
        return 0
    requeued = await _take_over(settings, engine, grace_s)
    handed = 0
    for task_id in requeued:
        result = await handover.hand_over(task_id, None)
        handed += result.state == "handed"
    if requeued:
        log.warning("took over tasks whose worker stopped (lease expired)", extra={
            "action": "lease_takeover", "requeued": len(requeued), "handed": handed})
    return handed


async def _take_over(settings: Settings, engine: AsyncEngine, grace_s: float) -> list[Any]:
    """The delivery-level take-over of expired leases (core.delivery): ids requeued."""
    from core import delivery

    takeover = getattr(delivery, "take_over_expired", None)
    if takeover is None:
        return []
    rows = await takeover(engine, max_attempts=settings.MAX_ATTEMPTS, grace_s=grace_s,
                          limit=TAKEOVER_BATCH)
    return [r for r in rows]


async def run(settings: Settings, engine: AsyncEngine, stop: asyncio.Event) -> None:
    dispatcher = get_dispatcher(settings)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(log_queue_config, settings, dispatcher)
    handover = Handover(dispatcher, engine)  # type: ignore[arg-type]
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.LEASE_CHECK_INTERVAL_S)
        if stop.is_set():
            return
        try:
            await take_over_expired(settings, engine, handover)
            await handover.finish_unfinished()
        except Exception as exc:
            log.warning("Cloud Tasks check failed: %s", type(exc).__name__,
                        extra={"action": "cloud_check_error"})
