"""One delivery of one task: claim, call the model, store, record. Returns what the
task endpoint should answer, per the delivery contract (DESIGN.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from core import classify, delivery
from core.config import Settings
from core.errors import StorageError, TaskFailure
from core.providers import ImageProvider, ImageRequest
from core.retry import decide, policy_from_settings
from core.status import TASK_TERMINAL
from core.storage import Storage, make_thumbnail, object_keys, png_text
from core.storage.thumbnails import THUMBNAIL_CONTENT_TYPE
from core.styles import apply_style

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryOutcome:
    http_status: int
    outcome: str  # succeeded | failed | retry | duplicate | busy | unknown_task | lost_lease
    task_id: str
    attempt: int | None = None
    retry_after_s: float | None = None
    error_code: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": self.task_id, "outcome": self.outcome}
        if self.attempt is not None:
            body["attempt"] = self.attempt
        if self.error_code:
            body["error_code"] = self.error_code
        return body


def outcome_without_claim(task_id: str, state: delivery.TaskState | None) -> DeliveryOutcome:
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
    # queued but not claimable cannot happen (claim takes queued); answer retry.
    return DeliveryOutcome(503, "busy", task_id, retry_after_s=1.0)


ProviderGetter = Callable[[str], ImageProvider]


class TaskProcessor:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        provider_for: ProviderGetter,
        storage: Storage,
        *,
        on_finished: Callable[[str, DeliveryOutcome, float | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.provider_for = provider_for
        self.storage = storage
        self.policy = policy_from_settings(settings)
        self.on_finished = on_finished

    async def process(
        self, task_id: UUID, *, attempt_floor: int = 0, log_extra: dict[str, Any] | None = None
    ) -> DeliveryOutcome:
        extra = {"task_id": str(task_id), **(log_extra or {})}
        claimed = await delivery.claim(
            self.engine, task_id, lease_s=self.settings.lease_s, attempt_floor=attempt_floor
        )
        if claimed is None:
            outcome = outcome_without_claim(str(task_id), await delivery.state(self.engine,
                                                                                task_id))
            log.info("delivery not claimed: %s", outcome.outcome,
                     extra={"action": "process_task_skip", **extra,
                            "outcome": outcome.outcome})
            return outcome
        extra.update(job_id=str(claimed.job_id), attempt=claimed.attempt)
        started = time.monotonic()
        provider_latency_s: float | None = None
        try:
            provider = self.provider_for(claimed.provider)
            image = await provider.generate(ImageRequest(
                prompt=apply_style(claimed.style, claimed.prompt),
                model=claimed.model, size=claimed.size, quality=claimed.quality,
                task_id=claimed.id, attempt=claimed.attempt,
                seed_key=f"{claimed.job_id}:{claimed.prompt_index}:{claimed.image_index}",
            ))
            provider_latency_s = time.monotonic() - started
            keys = object_keys(claimed.job_id, claimed.id)
            image = png_text.tagged(image, claimed)  # prompt, model and job id in the PNG
            # Thumbnail and both writes in one worker thread: one hop, not three.
            await asyncio.to_thread(self._store_both, keys.image, keys.thumbnail, image.data,
                                    image.content_type)
        except TaskFailure as failure:
            return await self._failed(claimed, failure, started, provider_latency_s, extra)
        except Exception as exc:
            log.exception("unexpected error in task", extra={"action": "process_task_error",
                                                              **extra})
            return await self._failed(claimed, classify.internal_error(exc), started,
                                      provider_latency_s, extra)
        latency_ms = int((time.monotonic() - started) * 1000)
        owned = await delivery.complete(
            self.engine, claimed, image_path=keys.image, thumbnail_path=keys.thumbnail,
            latency_ms=latency_ms, input_tokens=image.input_tokens,
            output_tokens=image.output_tokens,
        )
        outcome = DeliveryOutcome(200, "succeeded" if owned else "lost_lease", str(task_id),
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
        claimed: delivery.ClaimedTask,
        failure: TaskFailure,
        started: float,
        provider_latency_s: float | None,
        extra: dict[str, Any],
    ) -> DeliveryOutcome:
        latency_ms = int((time.monotonic() - started) * 1000)
        decision = decide(failure, attempt=claimed.attempt, policy=self.policy)
        task_id = str(claimed.id)
        if decision.final:
            owned = await delivery.fail(self.engine, claimed, code=failure.code,
                                        message=failure.message, latency_ms=latency_ms)
            outcome = DeliveryOutcome(200, "failed" if owned else "lost_lease", task_id,
                                      attempt=claimed.attempt, error_code=failure.code)
            level = logging.ERROR if failure.code == "authentication_error" else logging.WARNING
            log.log(level, "task failed: %s", failure.code,
                    extra={"action": "process_task_failed", **extra, "error_code": failure.code,
                           "retryable": failure.retryable, "latency_ms": latency_ms})
        else:
            await delivery.release(self.engine, claimed, code=failure.code,
                                   message=failure.message, delay_s=decision.delay_s,
                                   latency_ms=latency_ms)
            outcome = DeliveryOutcome(decision.http_status, "retry", task_id,
                                      attempt=claimed.attempt, error_code=failure.code,
                                      retry_after_s=decision.retry_after_s)
            log.info("task will be retried: %s", failure.code,
                     extra={"action": "process_task_retry", **extra,
                            "error_code": failure.code, "delay_s": round(decision.delay_s, 3),
                            "http_status": decision.http_status})
        self._notify(claimed.provider, outcome, provider_latency_s)
        return outcome

    def _notify(self, provider: str, outcome: DeliveryOutcome, latency_s: float | None) -> None:
        if self.on_finished is not None:
            self.on_finished(provider, outcome, latency_s)
