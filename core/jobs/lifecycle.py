"""Jobs: submit a batch, retry failed tasks, cancel (reads: core.jobs.views). Sync (admin
API and dashboard); the task endpoint's hot path lives in core.delivery.statements."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict, Unpack
from uuid import UUID

from sqlalchemy import Connection, Engine

from core.billing.prices import estimate_cost_usd
from core.config import Settings, get_settings
from core.db import transaction
from core.db.queries import q
from core.dispatch import Dispatcher, TaskRef, get_dispatcher
from core.dispatch.base import EnqueueResult
from core.dispatch.cloudtasks.window import refill as window_refill
from core.errors import Conflict, NotFound
from core.jobs.meta import JobMeta
from core.jobs.options import (  # re-exported: callers say jobs.options_for(...)
    BACKGROUNDS,
    BATCH_FALLBACKS,
    MODERATIONS,
    OUTPUT_FORMATS,
    GenerationOptions,
    options_for,
)
from core.jobs.schedule import Schedule
from core.jobs.validation import BatchSpec
from core.jobs.views import JobView, job_view
from core.status import JOB_TERMINAL

__all__ = ["BACKGROUNDS", "BATCH_FALLBACKS", "MODERATIONS", "OUTPUT_FORMATS",
           "GenerationOptions", "options_for"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Submitted:
    """A submitted job and what its hand-over to the queue did: None where nothing was
    handed over here (the local queue is the table itself; batch mode plans later)."""

    job: JobView
    handover: EnqueueResult | None


class SubmitArgs(TypedDict, total=False):
    options: GenerationOptions | None
    engine: Engine | None
    dispatcher: Dispatcher | None
    settings: Settings | None
    meta: JobMeta | None
    schedule: Schedule | None


def submit_batch(spec: BatchSpec, **kwargs: Unpack[SubmitArgs]) -> JobView:
    """submit(), for the callers that need only the job."""
    return submit(spec, **kwargs).job


def submit(
    spec: BatchSpec,
    *,
    options: GenerationOptions | None = None,
    engine: Engine | None = None,
    dispatcher: Dispatcher | None = None,
    settings: Settings | None = None,
    meta: JobMeta | None = None,
    schedule: Schedule | None = None,
) -> Submitted:
    """Write the job and all its tasks in one transaction, then hand them to the queue
    (Cloud Tasks: the window's share, core.dispatch.cloudtasks.window).

    The hand-over happens after the commit (transactional outbox): if it stops half way,
    the rows are still pending and the sweeper finishes the job; the result says so, for
    the caller to show.
    """
    settings = settings or get_settings()
    options = options or GenerationOptions.from_settings(settings)
    job_id = uuid.uuid4()
    rows: list[tuple[UUID, UUID, int, int, str, str]] = []
    for prompt_index, prompt in enumerate(spec.prompts):
        for image_index in range(spec.count_per_prompt):
            rows.append((uuid.uuid4(), job_id, prompt_index, image_index, prompt, spec.style))
    estimate = estimate_cost_usd(options.provider, options.model, options.size,
                                 options.quality, len(rows), mode=options.mode)
    dispatcher = dispatcher or get_dispatcher(settings)
    # The local queue is this table, so handing a task to it is its status: written queued
    # by the COPY itself, in the same transaction, instead of a second UPDATE of every row
    # (half the time of a 10,000-task submit). Other queues get the outbox hand-over.
    # Batch mode: tasks wait 'running' with no lease (no queue claims them) until the
    # batch poller groups them into OpenAI batches (core/batch).
    batch = options.mode == "batch"
    local = dispatcher.name == "local" or batch
    with transaction(engine) as conn:
        conn.execute(q("insert_job"), {
            "id": job_id, "total_tasks": len(rows), "style": spec.style,
            "count_per_prompt": spec.count_per_prompt, "provider": options.provider,
            "model": options.model, "size": options.size, "quality": options.quality,
            "estimated_cost_usd": estimate, "mode": options.mode,
            "batch_fallback": options.batch_fallback, **_image_columns(options),
            **_meta_binds(meta or JobMeta()), **(schedule or Schedule()).binds(estimate, len(rows)),
        })
        _copy_tasks(conn, rows, "running" if batch else "queued" if local else "pending")
        job = job_view(conn.execute(q("job_by_id"), {"job_id": job_id}).one())
    log.info("job submitted", extra={"action": "submit_batch", "job_id": str(job_id),
                                     "total_tasks": len(rows)})
    handover = None
    if batch and settings.USE_CLOUD_TASKS:
        _schedule_batch_planning(settings, job_id)
    elif not local:
        handover = _hand_over(dispatcher, [TaskRef(r[0], 0) for r in rows], job_id, settings,
                              engine)
    return Submitted(job, handover)


def _schedule_batch_planning(settings: Settings, job_id: UUID) -> None:
    from core.batch import poller

    try:
        poller.schedule(settings, {"job_id": str(job_id)}, round_no=0, delay_s=0)
    except Exception as exc:  # the job's tasks wait unbatched; a later submit or poll plans
        log.error("batch planning task not created: %s", type(exc).__name__,
                  extra={"action": "batch_plan_schedule_error", "job_id": str(job_id)})


def _image_columns(options: GenerationOptions) -> dict[str, Any]:
    return {"output_format": options.output_format,
            "output_compression": options.output_compression,
            "background": options.background, "moderation": options.moderation}
def _meta_binds(meta: JobMeta) -> dict[str, Any]:
    return {"name": meta.name, "tags": list(meta.tags), "submitted_by": meta.submitted_by,
            "webhook_url": meta.webhook_url}


def _copy_tasks(conn: Connection, rows: Sequence[tuple[Any, ...]], status: str) -> None:
    # COPY, not INSERT ... VALUES: a 10,000-task batch is one round trip of a few MB.
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(
        "COPY generation_tasks (id, job_id, prompt_index, image_index, prompt, style, status)"
        " FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row((*row, status))


def _hand_over(dispatcher: Dispatcher, refs: list[TaskRef], job_id: UUID,
               settings: Settings | None = None, engine: Engine | None = None
               ) -> EnqueueResult:
    try:
        if settings is not None and settings.USE_CLOUD_TASKS:
            # The queue gets the window's room; the rest waits pending, handed
            # over as deliveries finish (core.dispatch.cloudtasks.window).
            result = window_refill(dispatcher, window=settings.CLOUD_TASKS_WINDOW,
                                   starvation_s=settings.PRIORITY_STARVATION_S,
                                   engine=engine)
        else:
            result = dispatcher.enqueue(refs)
    except Exception as exc:  # the sweeper re-enqueues what stayed pending
        log.error("enqueue failed; the sweeper will retry: %s", type(exc).__name__,
                  extra={"action": "enqueue_error", "job_id": str(job_id)})
        # Returned for the caller to report (core.jobs.handover_report), not a silent success.
        return EnqueueResult(failed=len(refs),
                             errors=[f"{type(exc).__name__}: {str(exc)[:200]}"])
    if result.failed:
        log.warning("some tasks were not enqueued; the sweeper will retry",
                    extra={"action": "enqueue_partial", "job_id": str(job_id),
                           "failed": result.failed})
    return result


@dataclass(frozen=True)
class RetryResult:
    requeued: int
    job: JobView
    # What the queue hand-over did (None = nothing to hand over), reported, not hidden.
    handover: EnqueueResult | None = None
    refusals_left: int = 0
    estimated_cost_usd: Decimal | None = None
    dry_run: bool = False

    def body(self) -> dict[str, Any]:
        """The API's and the CLI's answer."""
        return {**self.job.status_body(), "requeued": self.requeued,
                "refusals_left": self.refusals_left, "dry_run": self.dry_run,
                "estimated_cost_usd": (float(self.estimated_cost_usd)
                                       if self.estimated_cost_usd is not None else None)}

    def message(self) -> str:
        """One line for people (dashboard, CLI), the same words everywhere."""
        verb = "Would requeue" if self.dry_run else "Requeued"
        usd = self.estimated_cost_usd
        cost = ("" if usd is None
                else f" (estimated ${usd:.2f})" if usd == 0 or usd >= 1
                else f" (estimated ${usd:.4f})")
        left = (f"; {self.refusals_left} refusal(s) left alone (a retry would be refused "
                "again)" if self.refusals_left else "")
        return f"{verb} {self.requeued} failed task(s){cost}{left}."


def retry_failed(
    job_id: UUID,
    task_ids: Sequence[UUID] | None = None,
    *,
    include_refusals: bool = False,
    dry_run: bool = False,
    engine: Engine | None = None,
    dispatcher: Dispatcher | None = None,
    settings: Settings | None = None,
) -> RetryResult:
    """Requeue a job's failed tasks (all, or those in ``task_ids``) with a fresh attempt
    budget and a fresh dispatch generation. Refusals (moderation, invalid request) stay
    failed unless ``include_refusals``. ``dry_run`` counts and prices, changing nothing."""
    from core.classify import REFUSAL_CODES

    codes = None if include_refusals else sorted(REFUSAL_CODES)
    ids = [UUID(str(t)) for t in task_ids] if task_ids is not None else None
    params = {"job_id": job_id, "task_ids": ids, "refusal_codes": codes}
    with transaction(engine) as conn:
        # A dry run (drawn with every Job page) takes no lock: deliveries update this row.
        job = conn.execute(q("job_by_id" if dry_run else "lock_job"),
                           {"job_id": job_id}).first()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status == "cancelled":
            raise Conflict(f"job {job_id} is cancelled; its failed tasks cannot be retried")
        preview = conn.execute(q("retry_failed_preview"), params).one()
        rows = [] if dry_run else conn.execute(q("requeue_failed_tasks_filtered"),
                                               params).all()
        if rows:
            conn.execute(q("reopen_job"), {"job_id": job_id, "n": len(rows)})
        view = job_view(conn.execute(q("job_by_id"), {"job_id": job_id}).one())
        if rows and view.mode == "batch":
            conn.execute(q("batch_retry_tasks"), {"ids": [r.id for r in rows],
                                                  "job_id": job_id})
    count = int(preview.retry) if dry_run else len(rows)
    cost = estimate_cost_usd(view.provider, view.model, view.size, view.quality, count,
                             mode=view.mode)
    handover = None
    if rows and view.mode == "batch":
        log.info("failed tasks back into batches", extra={
            "action": "retry_failed", "job_id": str(job_id), "count": len(rows)})
        settings = settings or get_settings()
        if settings.USE_CLOUD_TASKS:
            _schedule_batch_planning(settings, job_id)
    elif rows:
        log.info("failed tasks requeued", extra={"action": "retry_failed",
                                                 "job_id": str(job_id), "count": len(rows)})
        settings = settings or get_settings()
        handover = _hand_over(dispatcher or get_dispatcher(settings),
                              [TaskRef(r.id, r.dispatch_generation) for r in rows], job_id,
                              settings, engine)
    return RetryResult(requeued=count, job=view, handover=handover,
                       refusals_left=int(preview.refusals_left), estimated_cost_usd=cost,
                       dry_run=dry_run)


def cancel_job(job_id: UUID, *, engine: Engine | None = None) -> JobView:
    """Cancel: tasks not yet running become cancelled; running ones finish and keep their
    result. Cancelling a cancelled job is a no-op; a finished job cannot be cancelled."""
    with transaction(engine) as conn:
        job = conn.execute(q("job_by_id"), {"job_id": job_id}).first()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status in JOB_TERMINAL and job.status != "cancelled":
            raise Conflict(f"job {job_id} already finished ({job.status})")
        if job.status != "cancelled":
            # The task rows first, then the job row: the order every delivery takes (its
            # task, then the job's counters). With the job row locked first, a delivery
            # claimed after this statement's snapshot (still "queued" in it) deadlocked
            # with the cancel as it completed. Window refills (Cloud Tasks mode) lock
            # pending rows too: they and the cancel take turns.
            conn.execute(q("window_lock"))
            n = conn.execute(q("cancel_job_tasks"), {"job_id": job_id}).rowcount
            # Batch mode: tasks waiting in a batch are cancelled too, and the poller
            # cancels the open batches at OpenAI (core/batch).
            n += conn.execute(q("batch_cancel_job_tasks"), {"job_id": job_id}).rowcount
            job = conn.execute(q("lock_job"), {"job_id": job_id}).one()
            if job.status in JOB_TERMINAL and job.status != "cancelled":
                # Its last tasks finished meanwhile (nothing was left to cancel).
                raise Conflict(f"job {job_id} already finished ({job.status})")
        if job.status != "cancelled":
            conn.execute(q("batch_request_cancel"), {"job_id": job_id})
            conn.execute(q("cancel_job"), {"job_id": job_id, "n": n})
            log.info("job cancelled", extra={"action": "cancel_job", "job_id": str(job_id),
                                             "cancelled_tasks": n})
        return job_view(conn.execute(q("job_by_id"), {"job_id": job_id}).one())
