"""Admin API for batch mode: a job's OpenAI batches (state and request counts)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from core.batch.views import job_batches
from core.jobs import views
from worker.deps import AdminDep
from worker.responses import error_responses

router = APIRouter(prefix="/api/admin", dependencies=[AdminDep], tags=["admin"],
                   responses=error_responses(401, 404, 503))


@router.get("/jobs/{job_id}/batches")
def list_job_batches(job_id: UUID) -> dict[str, Any]:
    job = views.get_job(job_id)  # 404 for an unknown job
    return {"job_id": str(job.id), "mode": job.mode,
            "batches": [b.to_dict() for b in job_batches(job_id)]}
