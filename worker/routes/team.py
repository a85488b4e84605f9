"""Admin API for team work on jobs: delete, clone, edit-and-resubmit a failed prompt,
the job's webhook notifications and the audit log. Thin: the rules live in core."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from core.db import get_engine
from core.errors import StorageError
from core.jobs import audit, edit, notify, retention
from worker.deps import AdminDep, CallerDep, SettingsDep
from worker.responses import error_responses

router = APIRouter(prefix="/api/admin", dependencies=[AdminDep], tags=["admin"],
                   responses=error_responses(401, 413, 422, 503))
_JOB = error_responses(404)
_JOB_STATE = error_responses(404, 409)
_DELETE = error_responses(404, 409, 503)


class ResubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The edited prompt; runs as a new task of the job.")


@router.delete("/jobs/{job_id}", responses=_DELETE)
def delete_job(job_id: UUID, request: Request, caller: CallerDep) -> dict[str, Any]:
    """Delete a finished or cancelled job, its tasks and its images (audited)."""
    try:
        result = retention.delete_job(job_id, actor=caller, storage=request.app.state.storage)
    except StorageError as exc:
        raise HTTPException(status_code=503, headers={"Retry-After": "30"}, detail=(
            f"{exc.message}; the job is kept, delete it again later")) from None
    return {"deleted": str(result.job_id), "tasks": result.tasks,
            "objects_deleted": result.objects}


@router.post("/jobs/{job_id}/clone", responses=_JOB)
def clone_job(job_id: UUID, settings: SettingsDep, caller: CallerDep) -> dict[str, Any]:
    """A new job with the same prompts and options."""
    view = edit.clone_job(job_id, submitted_by=caller, settings=settings)
    return {**view.summary(), "cloned_from": str(job_id)}


@router.post("/jobs/{job_id}/tasks/{task_id}/resubmit", responses=_JOB_STATE)
def resubmit_task(job_id: UUID, task_id: UUID, body: ResubmitRequest, settings: SettingsDep,
                  caller: CallerDep) -> dict[str, Any]:
    """Run an edited version of a failed (refused) prompt as a new task of the job."""
    done = edit.resubmit_task(job_id, task_id, body.prompt, submitted_by=caller,
                                  settings=settings)
    return {**done.job.status_body(), "task_id": str(done.task_id),
            "resubmitted_from": str(task_id)}


@router.get("/jobs/{job_id}/notifications", responses=_JOB)
def notifications(job_id: UUID) -> dict[str, Any]:
    rows = notify.notifications_of(job_id, get_engine())
    return {"notifications": [{
        "id": r.id, "job_status": r.job_status, "status": r.status, "attempts": r.attempts,
        "last_error": r.last_error, "created_at": r.created_at.isoformat(),
        "sent_at": r.sent_at.isoformat() if r.sent_at else None} for r in rows]}


@router.get("/audit")
def audit_log(
    job_id: Annotated[UUID | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return {"entries": [e.to_dict() for e in audit.entries(job_id=job_id, limit=limit)]}
