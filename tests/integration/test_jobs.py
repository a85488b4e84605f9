"""Jobs in core against a real PostgreSQL: submit, cancel, retry-failed, counters."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.errors import Conflict, NotFound
from core.jobs import lifecycle, views
from core.jobs.validation import BatchSpec


def _spec(n: int, count: int = 1, style: str = "none") -> BatchSpec:
    return BatchSpec(tuple(f"prompt {i}" for i in range(n)), style, count)


def _statuses(engine: Engine, job_id: uuid.UUID) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM generation_tasks "
                                 "WHERE job_id = :j GROUP BY status"), {"j": job_id}).all()
    return {r[0]: r[1] for r in rows}


def test_submit_writes_job_and_every_task_and_queues_them(
    settings: Settings, engine: Engine
) -> None:
    job = lifecycle.submit_batch(_spec(3, count=2, style="watercolor"), settings=settings,
                            engine=engine)
    assert job.summary() == {"id": str(job.id), "status": "pending", "total_tasks": 6,
                             "completed_tasks": 0, "failed_tasks": 0}
    assert _statuses(engine, job.id) == {"queued": 6}
    tasks = views.list_tasks(job.id, engine=engine)
    assert [(t.prompt_index, t.image_index) for t in tasks] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert {t.style for t in tasks} == {"watercolor"}
    assert views.get_job(job.id, engine=engine).progress_percentage == 0.0


def test_large_batch_is_one_transaction_of_bulk_rows(settings: Settings, engine: Engine) -> None:
    job = lifecycle.submit_batch(_spec(10_000), settings=settings, engine=engine)
    assert _statuses(engine, job.id) == {"queued": 10_000}
    assert views.count_tasks(job.id, engine=engine) == 10_000


def test_cancel_cancels_what_has_not_started(settings: Settings, engine: Engine) -> None:
    job = lifecycle.submit_batch(_spec(4), settings=settings, engine=engine)
    with engine.begin() as conn:  # one task is mid-flight
        conn.execute(text("UPDATE generation_tasks SET status='running', attempts=1, "
                          "lease_until=now()+interval '1 minute' WHERE job_id=:j AND "
                          "prompt_index=0"), {"j": job.id})
    cancelled = lifecycle.cancel_job(job.id, engine=engine)
    assert cancelled.status == "cancelled"
    assert _statuses(engine, job.id) == {"running": 1, "cancelled": 3}
    assert views.get_job(job.id, engine=engine).cancelled_tasks == 3
    assert lifecycle.cancel_job(job.id, engine=engine).cancelled_tasks == 3  # idempotent


def test_retry_failed_requeues_exactly_the_failed_tasks(settings: Settings, engine: Engine) -> None:
    job = lifecycle.submit_batch(_spec(4), settings=settings, engine=engine)
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE generation_tasks SET status = CASE WHEN prompt_index < 2 THEN 'failed' "
            "ELSE 'succeeded' END, attempts = 3, last_error_code = 'x', finished_at = now() "
            "WHERE job_id = :j"), {"j": job.id})
        conn.execute(text("UPDATE generation_jobs SET status='completed_with_errors', "
                          "completed_tasks=2, failed_tasks=2 WHERE id=:j"), {"j": job.id})
    failed = views.list_tasks(job.id, status="failed", engine=engine)
    only_first = lifecycle.retry_failed(job.id, [failed[0].id], settings=settings, engine=engine)
    assert only_first.requeued == 1
    assert only_first.job.status == "running" and only_first.job.failed_tasks == 1
    rest = lifecycle.retry_failed(job.id, settings=settings, engine=engine)
    assert rest.requeued == 1
    assert _statuses(engine, job.id) == {"queued": 2, "succeeded": 2}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT attempts, dispatch_generation FROM generation_tasks "
                                 "WHERE job_id=:j AND status='queued'"), {"j": job.id}).all()
    assert {tuple(r) for r in rows} == {(0, 1)}  # fresh budget, fresh dispatch generation
    assert lifecycle.retry_failed(job.id, settings=settings, engine=engine).requeued == 0


def test_unknown_and_conflicting_operations_are_refused(settings: Settings, engine: Engine) -> None:
    with pytest.raises(NotFound):
        views.get_job(uuid.uuid4(), engine=engine)
    with pytest.raises(NotFound):
        lifecycle.cancel_job(uuid.uuid4(), engine=engine)
    job = lifecycle.submit_batch(_spec(1), settings=settings, engine=engine)
    lifecycle.cancel_job(job.id, engine=engine)
    with pytest.raises(Conflict):
        lifecycle.retry_failed(job.id, settings=settings, engine=engine)
    done = lifecycle.submit_batch(_spec(1), settings=settings, engine=engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE generation_jobs SET status='completed' WHERE id=:j"),
                     {"j": done.id})
    with pytest.raises(Conflict):
        lifecycle.cancel_job(done.id, engine=engine)


def test_list_jobs_filters_by_status(settings: Settings, engine: Engine) -> None:
    a = lifecycle.submit_batch(_spec(1), settings=settings, engine=engine)
    b = lifecycle.submit_batch(_spec(1), settings=settings, engine=engine)
    lifecycle.cancel_job(b.id, engine=engine)
    assert [j.id for j in views.list_jobs(engine=engine)] == [b.id, a.id]
    assert [j.id for j in views.list_jobs(status="cancelled", engine=engine)] == [b.id]
