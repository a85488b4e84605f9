"""Admin API: batches and jobs. Thin: validation and decisions live in core."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from core.billing import charges
from core.errors import InvalidInput
from core.jobs import lifecycle, search, views
from core.jobs.meta import clean_meta
from core.jobs.schedule import clean_schedule
from core.jobs.schedule import set_schedule as set_job_schedule
from core.jobs.validation import limits_from_settings, validate_batch
from worker.deps import AdminDep, CallerDep, SettingsDep
from worker.responses import error_responses

router = APIRouter(prefix="/api/admin", dependencies=[AdminDep], tags=["admin"],
                   responses=error_responses(401, 413, 422, 503))
_JOB = error_responses(404)
_JOB_STATE = error_responses(404, 409)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(description="One prompt per image (times count_per_prompt).")
    style: str = Field(default="none", description="A style preset name.")
    count_per_prompt: int = Field(default=1, description="Images per prompt.")
    model: str | None = Field(default=None, description="OpenAI image model (openai only).")
    size: str | None = Field(default=None, description="Image size, e.g. 1024x1024.")
    quality: str | None = Field(default=None, description="low, medium, high or auto.")
    mode: str | None = Field(default=None, description="realtime (default) or batch: the "
                             "OpenAI Batch API, half price, done within 24 h.")
    batch_fallback: str | None = Field(default=None, description="Where an expired batch's "
                                       "unfinished tasks go: batch (default) or realtime.")
    output_format: str | None = Field(default=None, description="png, webp or jpeg.")
    output_compression: int | None = Field(default=None, description="0-100 (webp, jpeg).")
    background: str | None = Field(default=None, description="auto, opaque or transparent.")
    moderation: str | None = Field(default=None, description="auto or low.")
    confirm_unknown_price: bool = Field(default=False, description="Use a model without "
                                        "known rates (its cost is shown as tokens).")
    name: str | None = Field(default=None, description="A name to find the job by.")
    tags: list[str] | None = Field(default=None, description="Tags to find the job by.")
    webhook_url: str | None = Field(
        default=None, description="Posted once when the job ends (Slack-compatible JSON); "
                                  "default JOB_WEBHOOK_URL.")
    priority: str | None = Field(default=None, description="high, normal (default) or low: "
                                 "higher first, jobs of one priority share equally.")
    max_cost_usd: float | None = Field(default=None, description="Spend cap: at it the "
                                       "job's tasks wait (not fail) until it is raised.")


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: str | None = Field(default=None, description="high, normal or low.")
    max_cost_usd: float | None = Field(default=None, description="New spend cap (USD).")
    clear_cap: bool = Field(default=False, description="Remove the spend cap.")


class JobSummary(BaseModel):
    id: str
    status: str
    total_tasks: int
    completed_tasks: int
    failed_tasks: int


class JobStatus(JobSummary):
    progress_percentage: float


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_ids: list[UUID] | None = Field(default=None, description="Only these failed tasks.")
    include_refusals: bool = Field(
        default=False, description="Also retry refusals (moderation, invalid request), "
                                   "which are usually refused again.")
    dry_run: bool = Field(default=False, description="Only count and price the retry.")


@router.post("/generate/batch", response_model=JobSummary)
def submit_batch(body: BatchRequest, settings: SettingsDep, caller: CallerDep
                 ) -> dict[str, Any]:
    spec = validate_batch(body.prompts, body.style, body.count_per_prompt,
                          limits_from_settings(settings))
    options = lifecycle.options_for(
        settings, model=body.model, size=body.size, quality=body.quality, mode=body.mode,
        batch_fallback=body.batch_fallback, output_format=body.output_format,
        output_compression=body.output_compression, background=body.background,
        moderation=body.moderation, confirm_unknown_price=body.confirm_unknown_price)
    meta = clean_meta(name=body.name, tags=body.tags, webhook_url=body.webhook_url,
                      submitted_by=caller, production=settings.ENVIRONMENT == "production")
    schedule = clean_schedule(priority=body.priority, max_cost_usd=body.max_cost_usd)
    # The deployment guide's response shape, unchanged; GET /jobs/{id} shows the rest.
    return lifecycle.submit_batch(spec, options=options, settings=settings, meta=meta,
                             schedule=schedule).summary()


@router.post("/jobs/{job_id}/schedule", responses=_JOB)
def set_schedule(job_id: UUID, body: ScheduleRequest, settings: SettingsDep
                 ) -> dict[str, Any]:
    """Change a running job's priority or spend cap (raising it resumes)."""
    if body.priority is None and body.max_cost_usd is None and not body.clear_cap:
        raise InvalidInput("priority", "give priority, max_cost_usd or clear_cap")
    changed = set_job_schedule(job_id, priority=body.priority,
                               max_cost_usd=body.max_cost_usd, clear_cap=body.clear_cap)
    if settings.USE_CLOUD_TASKS:  # the window follows the new order now
        from core.dispatch.cloudtasks.window import get_refiller

        get_refiller(settings).request()
    return changed


@router.get("/jobs/{job_id}/status", response_model=JobStatus, responses=_JOB)
def job_status(job_id: UUID) -> dict[str, Any]:
    return views.get_job(job_id).status_body()


@router.get("/jobs/{job_id}", responses=_JOB)
def job_detail(job_id: UUID) -> dict[str, Any]:
    job = views.get_job(job_id)
    # The billed cost (usage x rates) beside the estimate.
    return {**job.detail(), **charges.job_cost(job.id, job.model, job.provider).to_dict()}


@router.get("/jobs")
def list_jobs(
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    q: Annotated[str | None, Query(max_length=200, description=(
        "Text in the job's name, a tag, or a prompt (at least 3 characters)"))] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    submitted_by: Annotated[str | None, Query(max_length=320)] = None,
) -> dict[str, Any]:
    if q or tag or submitted_by:
        hits = search.search_jobs(search.SearchQuery.of(
            text=q, tag=tag, submitted_by=submitted_by, status=status), limit=limit,
            offset=offset)
        return {"jobs": [j.detail() for j in hits.jobs], "limit": limit, "offset": offset,
                "more": hits.more}
    found = views.list_jobs(status=status, limit=limit, offset=offset)
    return {"jobs": [j.detail() for j in found], "limit": limit, "offset": offset}


@router.get("/jobs/{job_id}/tasks", responses=_JOB)
def list_tasks(
    job_id: UUID,
    status: Annotated[str | None, Query()] = None,
    error_code: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    found = views.list_tasks(job_id, status=status, error_code=error_code, limit=limit,
                            offset=offset)
    total = views.count_tasks(job_id, status=status, error_code=error_code)
    return {"tasks": [t.to_dict() for t in found], "total": total, "limit": limit,
            "offset": offset}


@router.post("/jobs/{job_id}/retry-failed", responses=_JOB_STATE)
def retry_failed(
    job_id: UUID, settings: SettingsDep, body: RetryRequest | None = None
) -> dict[str, Any]:
    task_ids = body.task_ids if body else None
    if task_ids is not None and not task_ids:
        raise InvalidInput("task_ids", "must not be empty (omit it to retry every failed task)")
    result = lifecycle.retry_failed(job_id, task_ids, settings=settings,
                               include_refusals=bool(body and body.include_refusals),
                               dry_run=bool(body and body.dry_run))
    return result.body()


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=_JOB_STATE)
def cancel(job_id: UUID, settings: SettingsDep) -> dict[str, Any]:
    if not settings.USE_CLOUD_TASKS:
        return lifecycle.cancel_job(job_id).status_body()
    # The window's Cloud Tasks go too, so no delivery starts after the cancel.
    from core.dispatch import get_dispatcher
    from core.dispatch.cloudtasks.window import cancel_window, drop_window

    dispatcher = get_dispatcher(settings)
    names, _ = cancel_window(dispatcher, job_id)
    body = lifecycle.cancel_job(job_id).status_body()
    drop_window(dispatcher, names)
    return body
