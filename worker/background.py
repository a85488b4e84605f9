"""Background loops beside the sweeper: job-end webhooks (core.jobs.notify) and the retention
sweep (core.jobs.retention). Each runs its blocking work in a thread, so the event loop that
serves deliveries never waits on a webhook receiver or a storage delete."""

from __future__ import annotations

import asyncio
import logging

import httpx

from core import db
from core.billing import spend
from core.config import Settings
from core.jobs import notify, retention
from core.stopping import stopped_within
from core.storage import Storage

log = logging.getLogger(__name__)


async def notify_forever(settings: Settings, stop: asyncio.Event) -> None:
    engine = db.get_engine(db.resolve_database_url(settings))
    # No redirects: a receiver must not bounce the message (and its secret URL's body) on.
    with httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_S, follow_redirects=False) as client:
        while not await stopped_within(stop, settings.WEBHOOK_POLL_S):
            try:
                await asyncio.to_thread(notify.send_due, settings, engine, client)
            except Exception as exc:
                log.warning("webhook sender failed: %s", type(exc).__name__,
                            extra={"action": "webhook_sender_error"})


async def retention_forever(settings: Settings, storage: Storage, stop: asyncio.Event) -> None:
    if settings.JOB_RETENTION_DAYS is None:
        return
    engine = db.get_engine(db.resolve_database_url(settings))
    while True:
        try:
            await asyncio.to_thread(retention.sweep_expired, settings.JOB_RETENTION_DAYS,
                                    storage, engine=engine)
        except Exception as exc:
            log.warning("retention sweep failed: %s", type(exc).__name__,
                        extra={"action": "retention_error"})
        if await stopped_within(stop, settings.RETENTION_SWEEP_INTERVAL_S):
            return


async def spend_forever(settings: Settings, stop: asyncio.Event) -> None:
    """Spend per job and budgets, every SPEND_CHECK_S (core.billing.spend); in Cloud
    Tasks mode a refill follows, so a raised cap or budget resumes at once."""
    engine = db.get_engine(db.resolve_database_url(settings))
    while not await stopped_within(stop, settings.SPEND_CHECK_S):
        try:
            await asyncio.to_thread(spend.check, settings, engine)
            if settings.USE_CLOUD_TASKS:
                from core.dispatch.cloudtasks.window import get_refiller

                await asyncio.to_thread(get_refiller(settings, engine).request)
        except Exception as exc:
            log.warning("spend check failed: %s", type(exc).__name__,
                        extra={"action": "spend_check_error"})
