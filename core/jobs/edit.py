"""Reuse a job: clone it (same prompts and options, a new job), or edit a failed
(typically refused) prompt and resubmit it as a new task of the same job.

A resubmitted task is one more task of the job: total_tasks grows by one and the job
reopens (core.status.job_status_after decides, under the job's row lock), while the
refused task stays failed as history, marked as replaced. So the job's counters always
equal its rows, and the same SQL rule that ends a job ends it again when the new task
finishes. A task can be resubmitted once (a unique index backs that up).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Engine

from core.billing.prices import estimate_cost_usd
from core.classify import MODERATION_CODES
from core.config import Settings, get_settings
from core.db import transaction
from core.db.queries import q
from core.dispatch import Dispatcher, TaskRef, get_dispatcher
from core.errors import Conflict, InvalidInput, NotFound
from core.jobs import audit
from core.jobs.lifecycle import GenerationOptions, _hand_over, submit_batch
from core.jobs.meta import JobMeta
from core.jobs.validation import limits_from_settings, validate_batch
from core.jobs.views import FailedTask, JobView
from core.jobs.views import job_view as _job
from core.status import JOB_TERMINAL, job_status_after

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resubmitted:
    """What resubmitting an edited failed task made: the new task, in its job."""

    task_id: UUID
    job: JobView


def clone_job(job_id: UUID, *, submitted_by: str | None, engine: Engine | None = None,
              dispatcher: Dispatcher | None = None, settings: Settings | None = None
              ) -> JobView:
    """A new job with the same prompts, style, count, model options, tags and webhook."""
    settings = settings or get_settings()
    with transaction(engine) as conn:
        job = conn.execute(q("job_for_clone"), {"job_id": job_id}).first()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        prompts = [r.prompt for r in conn.execute(q("prompts_for_clone"), {"job_id": job_id})]
    spec = validate_batch(prompts, job.style, job.count_per_prompt,
                          limits_from_settings(settings))
    options = GenerationOptions(job.provider, job.model, job.size, job.quality)
    name = f"{job.name} (copy)" if job.name else f"copy of {str(job_id)[:8]}"
    meta = JobMeta(name=name[:200], tags=tuple(job.tags or ()), submitted_by=submitted_by,
                   webhook_url=job.webhook_url)
    view = submit_batch(spec, options=options, engine=engine, dispatcher=dispatcher,
                        settings=settings, meta=meta)
    with transaction(engine) as conn:
        # Under the source job: its history says who copied it, and into which job.
        audit.record(conn, actor=submitted_by or "unknown", action="clone_job",
                     job_id=job_id, detail={"new_job": str(view.id),
                                            "tasks": view.total_tasks})
    return view


def resubmit_task(job_id: UUID, task_id: UUID, prompt: str, *, submitted_by: str | None,
                  engine: Engine | None = None, dispatcher: Dispatcher | None = None,
                  settings: Settings | None = None) -> Resubmitted:
    """Run an edited version of failed task ``task_id`` as a new task of its job."""
    settings = settings or get_settings()
    dispatcher = dispatcher or get_dispatcher(settings)
    local = dispatcher.name == "local"
    new_id = uuid.uuid4()
    with transaction(engine) as conn:
        job = conn.execute(q("lock_job"), {"job_id": job_id}).first()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status == "cancelled":
            raise Conflict(f"job {job_id} is cancelled; clone it to run its prompts again")
        task = conn.execute(q("task_for_resubmit"),
                            {"job_id": job_id, "task_id": task_id}).first()
        if task is None:
            raise NotFound(f"task {task_id} of job {job_id} not found")
        if task.replaced_by is not None:
            raise Conflict(f"task {task_id} was already resubmitted as task {task.replaced_by}")
        if task.status != "failed":
            raise Conflict(f"task {task_id} is {task.status}; only a failed task can be "
                           "edited and resubmitted")
        try:
            spec = validate_batch([prompt], task.style, 1, limits_from_settings(settings))
        except InvalidInput as exc:
            raise InvalidInput("prompt", exc.message.split(": ", 1)[-1]) from None
        row = conn.execute(q("job_for_clone"), {"job_id": job_id}).one()
        cost: Decimal | None = estimate_cost_usd(row.provider, row.model, row.size,
                                                 row.quality, 1)
        new_status = job_status_after(job.status, total=job.total_tasks + 1,
                                      completed=job.completed_tasks, failed=job.failed_tasks,
                                      cancelled=job.cancelled_tasks)
        assert new_status not in JOB_TERMINAL  # one more unfinished task
        index = conn.execute(q("next_prompt_index"), {"job_id": job_id}).scalar_one()
        conn.execute(q("insert_resubmitted_task"), {
            "id": new_id, "job_id": job_id, "prompt_index": index, "prompt": spec.prompts[0],
            "style": task.style, "status": "queued" if local else "pending",
            "resubmitted_from": task_id})
        conn.execute(q("grow_job"), {"job_id": job_id, "new_status": new_status,
                                     "cost": cost})
        audit.record(conn, actor=submitted_by or "unknown", action="resubmit_task",
                     job_id=job_id, detail={"task": str(task_id), "new_task": str(new_id),
                                            "error_code": task.last_error_code})
        view = _job(conn.execute(q("job_by_id"), {"job_id": job_id}).one())
    log.info("edited prompt resubmitted", extra={"action": "resubmit_task",
                                                 "job_id": str(job_id),
                                                 "task_id": str(new_id)})
    if not local:
        _hand_over(dispatcher, [TaskRef(new_id, 0)], job_id)
    return Resubmitted(task_id=new_id, job=view)


def editable_tasks(job_id: UUID, *, limit: int = 200, engine: Engine | None = None
                   ) -> list[FailedTask]:
    """Failed tasks not yet edited and resubmitted, moderation refusals first."""
    with transaction(engine) as conn:
        rows = conn.execute(q("failed_not_resubmitted"), {
            "job_id": job_id, "limit": limit, "refusal_codes": sorted(MODERATION_CODES)})
        return [FailedTask(**dict(r._mapping)) for r in rows]
