"""One delivery of one task: claim, call the model, store, record. Returns what the
task endpoint should answer, per the delivery contract (docs/architecture.md).

The claim's lease is renewed while the work runs (core.delivery.leases), only for work longer
than the renewal interval, so a short task costs no extra statement. A renewal that finds
the token gone stops the work before it writes anything. On a stop (SIGTERM) no new
delivery is claimed; work still running when the grace ends is cancelled and its task
released, due at once, without using up an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import classify
from core.config import Settings
from core.delivery import leases, statements
from core.delivery.retry import decide, policy_from_settings
from core.delivery.staging import Staging
from core.errors import StorageError, TaskFailure
from core.providers import GeneratedImage, ImageProvider, ImageRequest
from core.status import TASK_TERMINAL
from core.storage import Storage, make_thumbnail, object_keys, png_text
from core.storage.thumbnails import THUMBNAIL_CONTENT_TYPE
from core.styles import apply_style

log = logging.getLogger(__name__)

STOPPING_RETRY_AFTER_S = 1.0
# A tiny image on local disk is thumbnailed and written on the event loop (well under a
# millisecond): in a worker thread every syscall and PIL call gives up the GIL and waits
# up to the switch interval (5 ms) to get it back while the loop is busy, which put
# ~20 ms into each task of a 25-wide wave (the makespan benchmark). Larger images, and any
# storage that goes over the network, keep the thread.
INLINE_STORE_MAX_BYTES = 16 * 1024


@dataclass(frozen=True)
class DeliveryOutcome:
    http_status: int
    # succeeded | failed | retry | duplicate | busy | not_due | stopping | unknown_task |
    # lost_lease
    outcome: str
    task_id: str
    attempt: int | None = None
    retry_after_s: float | None = None
    error_code: str | None = None

    def retry_after_header(self) -> str | None:
        """Whole seconds, rounded up: a sender that waits this long finds the task due
        (rounding half-way down would bring a not-due task back a moment early)."""
        if self.retry_after_s is None:
            return None
        return str(max(1, math.ceil(self.retry_after_s)))

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": self.task_id, "outcome": self.outcome}
        if self.attempt is not None:
            body["attempt"] = self.attempt
        if self.error_code:
            body["error_code"] = self.error_code
        return body


def outcome_without_claim(task_id: str, state: statements.TaskState | None) -> DeliveryOutcome:
    """What to answer when the claim found nothing to do (pure)."""
    if state is None:
        # Nothing will ever exist under this id: answering non-2xx would make Cloud Tasks
        # retry it until max attempts for nothing.
        return DeliveryOutcome(200, "unknown_task", task_id)
    if state.status in TASK_TERMINAL:
        return DeliveryOutcome(200, "duplicate", task_id, attempt=state.attempts)
    if state.status == "running":
        # Another delivery holds a live lease: its answer decides. Retry after the lease,
        # in case that delivery dies.
        return DeliveryOutcome(503, "busy", task_id, attempt=state.attempts,
                               retry_after_s=max(1.0, round(state.lease_left_s, 1)))
    if state.due_in_s > 0:
        # Early: the table's backoff (or the provider's Retry-After) has not run out.
        return DeliveryOutcome(503, "not_due", task_id, attempt=state.attempts,
                               retry_after_s=round(state.due_in_s, 3))
    # queued and due but not claimed: a claim raced this one; answer retry.
    return DeliveryOutcome(503, "busy", task_id, retry_after_s=1.0)


def default_holder(settings: Settings) -> statements.Holder:
    boot = uuid4()
    owner, _ = leases.worker_owner(worker_id=settings.WORKER_ID,
                                   on_cloud_run=bool(settings.K_SERVICE),
                                   hostname=socket.gethostname(), port=settings.PORT,
                                   boot=str(boot))
    return statements.Holder(owner=owner, boot=boot)


ProviderGetter = Callable[[str], ImageProvider]


class _Stopped(Exception):
    """The work was cancelled by a stop, not by a lost lease."""


@dataclass
class _Lease:
    """Until when a delivery's lease surely runs, by the event loop's clock: the database
    set it from its own clock after the claim (or the last renewal that succeeded) was
    sent. The supervisor moves it; the work reads it before it stores anything."""

    held_until: float


class _LeaseGone(Exception):
    """The lease is no longer this delivery's: nothing may be stored."""


class TaskProcessor:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        provider_for: ProviderGetter,
        storage: Storage,
        *,
        on_finished: Callable[[str, DeliveryOutcome, float | None], None] | None = None,
        holder: statements.Holder | None = None,
        staging: Staging | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.provider_for = provider_for
        self.storage = storage
        self.policy = policy_from_settings(settings)
        self.on_finished = on_finished
        self.holder = holder or default_holder(settings)
        self.staging = staging or Staging(settings.STAGING_DIR)
        self.stopping = False
        self._work: set[asyncio.Task[DeliveryOutcome]] = set()

    # -- stopping ---------------------------------------------------------------------

    def begin_stop(self) -> None:
        """Claim nothing from now on (SIGTERM); in-flight work goes on."""
        self.stopping = True

    def in_flight(self) -> int:
        return len(self._work)

    async def finish_or_release(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for in-flight work, then cancel the rest (each delivery
        releases its task). Returns how many were cut."""
        self.begin_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # Looked at again after each wait: a delivery whose claim was on its way when the
        # stop began starts its work afterwards, and gets the same grace.
        while (pending := [w for w in self._work if not w.done()]) and loop.time() < deadline:
            await asyncio.wait(pending, timeout=deadline - loop.time())
        cut = [w for w in self._work if not w.done()]
        for work in cut:
            work.cancel(msg="stop")
        if cut:
            await asyncio.wait(cut, timeout=5.0)
        return len(cut)

    # -- one delivery -----------------------------------------------------------------

    async def process(
        self, task_id: UUID, *, attempt_floor: int = 0, log_extra: dict[str, Any] | None = None
    ) -> DeliveryOutcome:
        extra = {"task_id": str(task_id), **(log_extra or {})}
        if self.stopping:
            return DeliveryOutcome(503, "stopping", str(task_id),
                                   retry_after_s=STOPPING_RETRY_AFTER_S)
        lease = _Lease(asyncio.get_running_loop().time() + self.settings.lease_s)
        claimed = await statements.claim(
            self.engine, task_id, lease_s=self.settings.lease_s, holder=self.holder,
            max_attempts=self.settings.MAX_ATTEMPTS, attempt_floor=attempt_floor,
        )
        if claimed is None:
            return await self._not_claimed(task_id, extra)
        extra.update(job_id=str(claimed.job_id), attempt=claimed.attempt)
        work = asyncio.create_task(self._attempt(claimed, lease, extra))
        self._work.add(work)
        work.add_done_callback(self._work.discard)
        try:
            return await self._supervise(claimed, work, lease, extra)
        except asyncio.CancelledError:
            # The handler itself was cancelled (the server's own shutdown timeout): stop
            # the work and give the task back, whatever happens to this coroutine.
            work.cancel()
            await asyncio.shield(self._release_stopped(claimed, extra))
            raise

    async def _supervise(self, claimed: statements.ClaimedTask,
                         work: asyncio.Task[DeliveryOutcome], lease: _Lease,
                         extra: dict[str, Any]) -> DeliveryOutcome:
        """Await the work, renewing the lease every interval it is still running. A
        renewal that fails or hangs is retried soon (core.delivery.leases.renewal_retry_s), not an
        interval later, so a passing fault costs the lease a few seconds, not its end."""
        loop = asyncio.get_running_loop()
        lease_s, renew_s = self.settings.lease_s, leases.renew_every_s(self.settings)
        next_try = lease.held_until - lease_s + renew_s
        failures, lapsed = 0, False
        while True:
            done, _ = await asyncio.wait({work}, timeout=max(next_try - loop.time(), 0.0))
            if done:
                break
            sent = loop.time()
            try:
                owned = await asyncio.wait_for(
                    statements.renew(self.engine, claimed, lease_s=lease_s),
                    timeout=leases.renewal_timeout_s(renew_s))
            except (DBAPIError, OSError, TimeoutError) as exc:
                failures += 1
                next_try = loop.time() + leases.renewal_retry_s(renew_s)
                left_s = max(lease.held_until - loop.time(), 0.0)
                # The first failure, and the one that finds the lease run out (a
                # redelivery may take the task now; the token guard keeps this delivery
                # from writing over it): a database that is down fails every try.
                if failures == 1 or (left_s == 0.0 and not lapsed):
                    lapsed = left_s == 0.0
                    log.warning("lease renewal failed (%s), trying again; %.1f s of the lease "
                                "left", type(exc).__name__, left_s,
                                extra={"action": "lease_renew_error", **extra,
                                       "failures": failures, "lease_left_s": round(left_s, 1)})
                continue
            if not owned:
                work.cancel(msg="lost lease")
                await asyncio.wait({work})
                log.warning("lease lost during the task: its result is dropped",
                            extra={"action": "lease_lost", **extra})
                return DeliveryOutcome(200, "lost_lease", str(claimed.id),
                                       attempt=claimed.attempt)
            if failures:
                log.info("lease renewed after %d failed tries", failures,
                         extra={"action": "lease_renewed_after_errors", **extra,
                                "failures": failures})
            failures, lapsed = 0, False
            lease.held_until = sent + lease_s
            next_try = sent + renew_s
        try:
            return work.result()
        except asyncio.CancelledError:
            # Cancelled by a stop (finish_or_release): release it, due at once.
            await self._release_stopped(claimed, extra)
            return DeliveryOutcome(503, "stopping", str(claimed.id), attempt=claimed.attempt,
                                   retry_after_s=STOPPING_RETRY_AFTER_S)

    async def _release_stopped(self, claimed: statements.ClaimedTask,
                               extra: dict[str, Any]) -> None:
        try:
            released = await statements.release(
                self.engine, claimed, code="worker_stopping",
                message="the worker stopped before the task finished", delay_s=0.0,
                latency_ms=None, free_attempt=True)
            if released:  # else it finished (or was taken over) before the stop reached it
                log.info("task released: the worker is stopping",
                         extra={"action": "process_task_released", **extra})
        except (DBAPIError, OSError) as exc:
            # The lease runs out instead; the next holder takes it over.
            log.warning("could not release the task on stop: %s", type(exc).__name__,
                        extra={"action": "release_error", **extra})

    async def _not_claimed(self, task_id: UUID, extra: dict[str, Any]) -> DeliveryOutcome:
        state = await statements.state(self.engine, task_id)
        if state is not None and state.status == "running" and state.lease_expired:
            # The claim refused a takeover: the task has used up its attempts with its
            # holders dying. Fail it as worker_crashed (or requeue it, if the row moved).
            taken = await statements.take_over_abandoned(
                self.engine, max_attempts=self.settings.MAX_ATTEMPTS,
                to_status="pending" if self.settings.USE_CLOUD_TASKS else "queued",
                task_ids=[task_id], limit=1)
            for row in taken:
                log.warning("task taken over from a stopped worker: %s", row.status,
                            extra={"action": "lease_takeover", **extra,
                                   "crashes": row.crashes, "status": row.status})
                if row.status == "failed":
                    return DeliveryOutcome(200, "failed", str(task_id), attempt=row.attempts,
                                           error_code=leases.WORKER_CRASHED)
            state = await statements.state(self.engine, task_id)
        outcome = outcome_without_claim(str(task_id), state)
        log.info("delivery not claimed: %s", outcome.outcome,
                 extra={"action": "process_task_skip", **extra, "outcome": outcome.outcome})
        return outcome

    async def _confirm_lease(self, claimed: statements.ClaimedTask, lease: _Lease) -> None:
        """Before the work stores its image: if renewals have been failing (less than an
        interval of the lease surely left), ask the database whether the task is still
        ours; a redelivery may have taken it over, and its image goes to the same keys.
        Raises _LeaseGone if it is not; a database error goes up as any other."""
        loop = asyncio.get_running_loop()
        if lease.held_until - loop.time() > leases.renew_every_s(self.settings):
            return  # the usual case: no statement
        sent = loop.time()
        if not await statements.renew(self.engine, claimed, lease_s=self.settings.lease_s):
            raise _LeaseGone
        lease.held_until = sent + self.settings.lease_s

    async def _attempt(self, claimed: statements.ClaimedTask, lease: _Lease,
                       extra: dict[str, Any]) -> DeliveryOutcome:
        started = time.monotonic()
        provider_latency_s: float | None = None
        image: GeneratedImage | None = None
        paid = False
        try:
            if claimed.attempt > 1:
                # A previous attempt may have paid for this image already.
                image = await asyncio.to_thread(self.staging.take, claimed.id)
                if image is not None:
                    log.info("storing the answer a previous attempt paid for",
                             extra={"action": "staged_answer_used", **extra})
            if image is None:
                provider = self.provider_for(claimed.provider)
                image = await provider.generate(ImageRequest(
                    prompt=apply_style(claimed.style, claimed.prompt),
                    model=claimed.model, size=claimed.size, quality=claimed.quality,
                    task_id=claimed.id, attempt=claimed.attempt,
                    seed_key=f"{claimed.job_id}:{claimed.prompt_index}:{claimed.image_index}",
                    image_params=claimed.image_params(),
                ))
                paid = True
                provider_latency_s = time.monotonic() - started
            await self._confirm_lease(claimed, lease)
            keys = object_keys(claimed.job_id, claimed.id)
            image = png_text.tagged(image, claimed)  # prompt, model and job id in the PNG
            if self.storage.name == "local" and len(image.data) <= INLINE_STORE_MAX_BYTES:
                self._store_both(keys.image, keys.thumbnail, image.data, image.content_type)
            else:
                # Thumbnail and both writes in one worker thread: one hop, not three.
                await asyncio.to_thread(self._store_both, keys.image, keys.thumbnail,
                                        image.data, image.content_type)
            latency_ms = int((time.monotonic() - started) * 1000)
            owned = await statements.complete(
                self.engine, claimed, image_path=keys.image, thumbnail_path=keys.thumbnail,
                latency_ms=latency_ms, input_tokens=image.input_tokens,
                output_tokens=image.output_tokens,
            )
        except TaskFailure as failure:
            if paid and image is not None:
                await asyncio.to_thread(self.staging.keep, claimed.id, image)
            return await self._failed(claimed, failure, started, provider_latency_s, extra)
        except asyncio.CancelledError:
            if paid and image is not None:
                await asyncio.shield(asyncio.to_thread(self.staging.keep, claimed.id, image))
            raise
        except _LeaseGone:
            if paid and image is not None:
                await asyncio.to_thread(self.staging.keep, claimed.id, image)
            log.warning("lease lost before the image was stored: nothing stored",
                        extra={"action": "lease_lost", **extra})
            outcome = DeliveryOutcome(200, "lost_lease", str(claimed.id),
                                      attempt=claimed.attempt)
            self._notify(claimed.provider, outcome, provider_latency_s)
            return outcome
        except Exception as exc:
            if paid and image is not None:
                await asyncio.to_thread(self.staging.keep, claimed.id, image)
            if isinstance(exc, DBAPIError | OSError):
                raise  # the database is down: answered 503 by the app
            log.exception("unexpected error in task", extra={"action": "process_task_error",
                                                              **extra})
            return await self._failed(claimed, classify.internal_error(exc), started,
                                      provider_latency_s, extra)
        if not paid:
            await asyncio.to_thread(self.staging.drop, claimed.id)
        outcome = DeliveryOutcome(200, "succeeded" if owned else "lost_lease", str(claimed.id),
                                  attempt=claimed.attempt)
        log.info("task succeeded" if owned else "task finished after its lease was taken",
                 extra={"action": "process_task_done", **extra, "latency_ms": latency_ms,
                        "outcome": outcome.outcome})
        self._notify(claimed.provider, outcome, provider_latency_s)
        return outcome

    def _store_both(self, image_key: str, thumbnail_key: str, data: bytes,
                    content_type: str) -> None:
        """(In a worker thread.) The image first, then its thumbnail, as before."""
        thumbnail = make_thumbnail(data)
        self._store(image_key, data, content_type)
        self._store(thumbnail_key, thumbnail, THUMBNAIL_CONTENT_TYPE)

    def _store(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.storage.save(key, data, content_type)
        except StorageError as exc:
            raise classify.storage_error(exc.message) from exc

    async def _failed(
        self,
        claimed: statements.ClaimedTask,
        failure: TaskFailure,
        started: float,
        provider_latency_s: float | None,
        extra: dict[str, Any],
    ) -> DeliveryOutcome:
        latency_ms = int((time.monotonic() - started) * 1000)
        decision = decide(failure, attempt=claimed.attempt, policy=self.policy,
                          free_attempts=claimed.free_attempts,
                          rate_limited_for_s=claimed.rate_limited_for_s)
        task_id = str(claimed.id)
        if decision.final:
            owned = await statements.fail(self.engine, claimed, code=failure.code,
                                        message=failure.message, latency_ms=latency_ms)
            outcome = DeliveryOutcome(200, "failed" if owned else "lost_lease", task_id,
                                      attempt=claimed.attempt, error_code=failure.code)
            level = logging.ERROR if failure.code == "authentication_error" else logging.WARNING
            log.log(level, "task failed: %s", failure.code,
                    extra={"action": "process_task_failed", **extra, "error_code": failure.code,
                           "retryable": failure.retryable, "latency_ms": latency_ms})
        else:
            owned = await statements.release(
                self.engine, claimed, code=failure.code, message=failure.message,
                delay_s=decision.delay_s, latency_ms=latency_ms,
                free_attempt=decision.free_attempt, rate_limited=decision.rate_limited)
            # retry_after_s: when the table lets the task be claimed again (a Cloud Tasks
            # retry scheduled earlier would be answered not_due).
            outcome = DeliveryOutcome(decision.http_status, "retry" if owned else "lost_lease",
                                      task_id, attempt=claimed.attempt,
                                      error_code=failure.code, retry_after_s=decision.delay_s)
            log.info("task will be retried: %s", failure.code,
                     extra={"action": "process_task_retry", **extra,
                            "error_code": failure.code, "delay_s": round(decision.delay_s, 3),
                            "http_status": decision.http_status,
                            "free_attempt": decision.free_attempt})
        self._notify(claimed.provider, outcome, provider_latency_s)
        return outcome

    def _notify(self, provider: str, outcome: DeliveryOutcome, latency_s: float | None) -> None:
        if self.on_finished is not None:
            self.on_finished(provider, outcome, latency_s)
