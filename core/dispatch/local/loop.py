"""The local dispatch loop: claims due tasks with FOR UPDATE SKIP LOCKED and POSTs each to
the worker's task endpoint, at most a limited number in flight, like a Cloud Tasks queue.

The table is the queue: a restart loses nothing. A claimed row carries a short hold
(lease_until, owner, boot) while its delivery is on the way, which the handler's claim
replaces with the task's own renewed lease; this process's next boot frees its holds and
running rows at once, and the loop takes over expired leases of other holders every
renewal interval (core.delivery.leases). When to retry is the table's decision (the handler's
release stores next_attempt_at); the loop only defers deliveries that never reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import worker_url as worker_urls
from core.classify import parse_retry_after
from core.config import Settings
from core.db import hotsql
from core.delivery import leases, statements
from core.delivery.retry import compute_backoff, policy_from_settings
from core.dispatch import undeliverable
from core.dispatch.local.http1 import Answer, KeepAliveClient, plain_http_target
from core.dispatch.local.limits import ConcurrencyLimit, limit_from_settings
from core.stopping import stopped_within

log = logging.getLogger(__name__)

TASK_SECRET_HEADER = "X-Task-Secret"
# Deliveries per HTTP client (connection pool); see run().
CONNECTIONS_PER_CLIENT = 4
# After this many consecutive unreachable deliveries the loop pauses claiming for a while.
UNREACHABLE_BREAKER = 3


@dataclass(frozen=True)
class Claimed:
    id: UUID
    attempts: int
    marker: datetime


@dataclass
class LoopStats:
    delivered: int = 0
    succeeded_http: int = 0
    retried_http: int = 0
    unreachable: int = 0
    in_flight: int = 0
    claim_rounds: int = 0  # dispatch claims sent
    claimed: int = 0  # rows they claimed


class LocalDispatchLoop:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        worker_url: str,
        *,
        limit: ConcurrencyLimit | None = None,
        holder: statements.Holder | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder or statements.Holder(owner="dispatcher", boot=uuid4())
        self._next_takeover = 0.0
        self.engine = engine
        self.task_url = worker_urls.task_url(worker_url)  # base or full task URL
        self.limit = limit or limit_from_settings(settings)
        self.policy = policy_from_settings(settings)
        self.stats = LoopStats()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._unreachable_streak = 0
        self._headers = {"content-type": "application/json"}
        self._post: Callable[[bytes, dict[str, str]], Awaitable[Answer]]  # set by run()
        if settings.TASK_SECRET is not None:
            self._headers[TASK_SECRET_HEADER] = settings.TASK_SECRET.get_secret_value()

    def wake(self) -> None:
        """Look for due tasks now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._open_clients(stack)
            log.info("local dispatcher started", extra={"action": "dispatcher_start",
                                                        "url": self.task_url})
            while not stop.is_set():
                # Cleared before the claim, not in _wait: a delivery that ends while the
                # claim awaits the database must wake the next round, not be lost until
                # the next poll.
                self._wake.clear()
                try:
                    await self._take_over_expired()
                    claimed = await self._claim_round()
                except (DBAPIError, OSError) as exc:
                    log.warning("dispatcher cannot reach the database: %s", type(exc).__name__,
                                extra={"action": "dispatcher_db_error"})
                    claimed = 0
                    await stopped_within(stop, 1.0)
                if claimed == 0 or len(self._in_flight) >= self.limit.current:
                    await self._wait(stop)
            # Stopped claiming first; the handlers finish or release within the grace.
            await self._drain(self.settings.SHUTDOWN_GRACE_S + 2.0)
            log.info("local dispatcher stopped", extra={
                "action": "dispatcher_stop", "delivered": self.stats.delivered,
                "claim_rounds": self.stats.claim_rounds, "claimed": self.stats.claimed})

    async def _open_clients(self, stack: contextlib.AsyncExitStack) -> None:
        """A plain-http task URL gets the lean keep-alive client (core.dispatch.local.http1);
        https (or a proxy from the environment) keeps httpx."""
        if plain_http_target(self.task_url):
            client = KeepAliveClient(self.task_url, timeout_s=self.settings.DISPATCH_DEADLINE_S,
                                     connect_timeout_s=5.0,
                                     max_idle=max(self.limit.ceiling, 1) + 2)
            stack.push_async_callback(client.aclose)
            self._post = client.post
            return
        timeout = httpx.Timeout(self.settings.DISPATCH_DEADLINE_S, connect=5.0)
        # httpx's pool checks every pooled connection (a poll() each) on every request, so
        # one pool of 50 connections costs more than the request. Small pools, used in
        # turn, keep that scan short (4 each: the scan was still 4 % of the worker's CPU
        # with 8 + 4); each has room for its share plus 2 kept alive.
        shards = max(1, math.ceil(self.limit.ceiling / CONNECTIONS_PER_CLIENT))
        per_client = math.ceil(max(self.limit.ceiling, 1) / shards) + 2
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        clients = [await stack.enter_async_context(httpx.AsyncClient(timeout=timeout,
                                                                     limits=limits))
                   for _ in range(shards)]
        next_client = itertools.cycle(clients)

        async def post(body: bytes, headers: dict[str, str]) -> Answer:
            response = await next(next_client).post(self.task_url, content=body,
                                                     headers=headers)
            return Answer(response.status_code,
                          {k.lower(): v for k, v in response.headers.items()},
                          response.content)

        self._post = post

    async def _take_over_expired(self) -> None:
        """Every renewal interval: tasks whose holder's lease ran out (it died) go back to
        the queue, or fail as worker_crashed at MAX_ATTEMPTS."""
        now = time.monotonic()
        if now < self._next_takeover:
            return
        self._next_takeover = now + leases.renew_every_s(self.settings)
        taken = await statements.take_over_abandoned(
            self.engine, max_attempts=self.settings.MAX_ATTEMPTS, to_status="queued")
        for row in taken:
            log.warning("task taken over from a stopped holder: %s", row.status,
                        extra={"action": "lease_takeover", "task_id": str(row.id),
                               "job_id": str(row.job_id), "crashes": row.crashes,
                               "status": row.status})

    async def _claim_round(self) -> int:
        if self._unreachable_streak >= UNREACHABLE_BREAKER:
            # The worker is down: probe with a single delivery instead of a burst.
            free = 1 if not self._in_flight else 0
        else:
            free = self.limit.current - len(self._in_flight)
        if free <= 0:
            return 0
        # The hold only covers the hop to the handler, whose claim replaces it.
        visibility_s = self.settings.lease_s
        # One statement (the pause check included), so autocommit: no BEGIN/COMMIT trips;
        # on psycopg directly (core.db.hotsql), prepared.
        rows = await (await hotsql.get(self.engine)).all("dispatch_claim_due", {
            "limit": free, "visibility_s": visibility_s,
            "starvation_s": self.settings.PRIORITY_STARVATION_S,
            "queue_name": self.settings.QUEUE_NAME,
            "owner": self.holder.owner, "boot": self.holder.boot,
        })
        self.stats.claim_rounds += 1
        self.stats.claimed += len(rows)
        for row in rows:
            claimed = Claimed(id=row["id"], attempts=row["attempts"],
                              marker=row["lease_until"])
            task = asyncio.create_task(self._deliver(claimed))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        self.stats.in_flight = len(self._in_flight)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.stats.in_flight = len(self._in_flight)
        self._wake.set()

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        poll_s = self.settings.DISPATCH_POLL_S
        if self._unreachable_streak >= UNREACHABLE_BREAKER:
            poll_s = max(poll_s, min(self.policy.min_backoff_s, 5.0))
        hold_left = getattr(self.limit, "hold_left_s", None)
        if hold_left is not None and hold_left() > 0:
            # Held by a 429's Retry-After: look again the moment it ends, not a poll later.
            poll_s = min(poll_s, hold_left() + 0.01)
        try:
            await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _deliver(self, task: Claimed) -> None:
        started = time.monotonic()
        retry_after: float | None = None
        try:
            response = await self._post(b'{"task_id":"%s"}' % str(task.id).encode(),
                                        self._headers)
        except httpx.HTTPError as exc:
            self._unreachable_streak += 1
            self.stats.unreachable += 1
            log.warning("delivery failed: %s", type(exc).__name__,
                        extra={"action": "deliver_error", "task_id": str(task.id)})
            self.limit.on_result(ok=False, overloaded=False)
            if not await self._undeliverable(task, status=None, error=exc):
                await self._defer(task, delay_s=compute_backoff(max(task.attempts, 1),
                                                                self.policy))
            return
        self._unreachable_streak = 0
        self.stats.delivered += 1
        elapsed_ms = int((time.monotonic() - started) * 1000)
        if 200 <= response.status_code < 300:
            self.stats.succeeded_http += 1
            self.limit.on_result(ok=True, overloaded=False)
            return
        self.stats.retried_http += 1
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        # A 429 is the provider's limit (shared by every task): its Retry-After holds the
        # whole queue. A 503's may be one task's live lease, so it only counts as overload.
        self.limit.on_result(ok=False, overloaded=response.status_code in (429, 503),
                             retry_after_s=retry_after if response.status_code == 429 else None)
        log.info("delivery answered %s", response.status_code,
                 extra={"action": "deliver_retry", "task_id": str(task.id),
                        "http_status": response.status_code, "latency_ms": elapsed_ms})
        if response.status_code == 503 and _outcome(response) == "stopping":
            return  # the worker is stopping: its next boot frees the hold
        if await self._undeliverable(task, status=response.status_code, error=None):
            return  # undeliverable: recorded, spread by its own backoff (or failed)
        # The handler decided (its release stored next_attempt_at) or did not claim (busy,
        # not due): drop the hold, if it is still there, so the row is due when the table
        # says, not when the hold runs out.
        await self._defer(task, delay_s=0.0)

    async def _undeliverable(self, task: Claimed, *, status: int | None,
                             error: BaseException | None) -> bool:
        """A delivery that never reached the handler is recorded and bounded
        (core.dispatch.undeliverable); False = an ordinary retry, deferred as before."""
        cause = undeliverable.classify(self.task_url, status=status, error=error)
        if cause is None:
            return False
        try:
            await undeliverable.record(
                self.engine, task_id=task.id, marker=task.marker, cause=cause,
                url=self.task_url, max_tries=self.settings.UNDELIVERABLE_MAX_TRIES,
                min_delay_s=self.policy.min_backoff_s, max_delay_s=self.policy.max_backoff_s)
        except (DBAPIError, OSError) as exc:
            log.warning("could not record an undeliverable try: %s", type(exc).__name__,
                        extra={"action": "record_undeliverable_error", "task_id": str(task.id)})
            return False
        return True

    async def _defer(self, task: Claimed, *, delay_s: float) -> None:
        try:
            await (await hotsql.get(self.engine)).count(
                "dispatch_defer",
                {"task_id": task.id, "marker": task.marker, "delay_s": delay_s})
        except (DBAPIError, OSError):
            # The visibility timeout brings the task back anyway.
            log.warning("could not defer task", extra={"action": "defer_error",
                                                       "task_id": str(task.id)})

    async def _drain(self, grace_s: float = 5.0) -> None:
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(self._in_flight, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _outcome(response: Answer) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("outcome") if isinstance(body, dict) else None
