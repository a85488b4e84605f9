"""Deleting jobs with their images: by an operator (API, dashboard) or by the retention
sweep (JOB_RETENTION_DAYS; off by default). Audited in core.jobs.audit either way.

A job still at work is refused: its deliveries would write images for rows that are
gone. A cancelled job is deleted once the tasks that were already running have finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q
from core.errors import Conflict, NotFound
from core.jobs import audit
from core.storage import Storage

log = logging.getLogger(__name__)

RETENTION_BATCH = 100


@dataclass(frozen=True)
class DeleteResult:
    job_id: UUID
    tasks: int
    objects: int


def delete_job(job_id: UUID, *, actor: str, storage: Storage,
               engine: Engine | None = None, reason: str = "delete_job") -> DeleteResult:
    """Delete the job's rows and its images, and write the audit entry.

    One transaction holds the job's lock from the check to the commit, so a retry cannot
    reopen the job in between. The images are removed before the commit: if storage
    fails, the rows stay (StorageError) and the operator can delete again."""
    with transaction(engine) as conn:
        job = conn.execute(q("lock_job"), {"job_id": job_id}).first()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status in ("pending", "running"):
            raise Conflict(f"job {job_id} is {job.status}: cancel it first, then delete it")
        running = int(conn.execute(q("live_running_tasks"), {"job_id": job_id}).scalar_one())
        if running:
            raise Conflict(f"job {job_id} still has {running} task(s) running after the "
                           "cancel; delete it when they have finished")
        keys = [k for row in conn.execute(q("job_object_keys"), {"job_id": job_id})
                for k in (row.image_path, row.thumbnail_path) if k]
        gone = conn.execute(q("delete_job_row"), {"job_id": job_id}).one()
        audit.record(conn, actor=actor, action=reason, job_id=job_id, detail={
            "status": gone.status, "tasks": gone.total_tasks, "objects": len(keys),
            "name": gone.name, "submitted_by": gone.submitted_by})
        if keys:
            storage.delete(keys)
    log.info("job deleted", extra={"action": reason, "job_id": str(job_id),
                                   "tasks": gone.total_tasks, "objects": len(keys)})
    return DeleteResult(job_id=job_id, tasks=int(gone.total_tasks), objects=len(keys))


def sweep_expired(days: int, storage: Storage, *, engine: Engine | None = None,
                  limit: int = RETENTION_BATCH) -> list[DeleteResult]:
    """Delete finished jobs that ended more than ``days`` ago (a batch per call)."""
    with transaction(engine) as conn:
        ids = [r.id for r in conn.execute(q("expired_jobs"), {"days": days, "limit": limit})]
    done: list[DeleteResult] = []
    for job_id in ids:
        try:
            done.append(delete_job(job_id, actor=audit.RETENTION_ACTOR, storage=storage,
                                   engine=engine, reason="retention_delete"))
        except (Conflict, NotFound):
            continue  # reopened by a retry, or deleted by an operator meanwhile
    if done:
        log.info("retention deleted expired jobs",
                 extra={"action": "retention_sweep", "jobs": len(done), "days": days})
    return done
