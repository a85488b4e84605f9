"""A cancel and a delivery that finishes while it runs, against a real PostgreSQL: the
cancel takes the task rows before the job row, the order every delivery takes, so the two
never deadlock (seen under load as a 503 "database unavailable", SQLSTATE 40P01, on the
cancel of a running 5,000-task job)."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import Engine, text

from core.config import Settings
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec
from core.jobs.views import JobView


def _waiting_on_a_lock(engine: Engine, marker: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE :q"), {"q": f"%{marker}%"}).scalar())


def test_a_completion_under_way_does_not_deadlock_with_a_cancel(settings: Settings,
                                                                 engine: Engine) -> None:
    job = lifecycle.submit_batch(BatchSpec(prompts=[f"p{i}" for i in range(4)], style="none",
                                      count_per_prompt=1), settings=settings, engine=engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE generation_tasks SET status = 'queued' WHERE job_id = :j"),
                     {"j": job.id})
        task_id = conn.execute(text("SELECT id FROM generation_tasks WHERE job_id = :j "
                                    "ORDER BY prompt_index LIMIT 1"), {"j": job.id}).scalar()
    delivery = engine.connect()
    tx = delivery.begin()
    # A delivery of one task: its claim took the row (the cancel's snapshot may still see
    # it queued); it will finish by moving the job's counter, as complete_task does.
    delivery.execute(text("UPDATE generation_tasks SET status = 'running', "
                          "claim_token = :t WHERE id = :id"), {"t": uuid.uuid4(), "id": task_id})
    outcome: dict[str, object] = {}

    def cancel() -> None:
        try:
            outcome["job"] = lifecycle.cancel_job(job.id, engine=engine)
        except Exception as exc:  # the assertion below names it
            outcome["error"] = exc

    canceller = threading.Thread(target=cancel)
    canceller.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_a_lock(engine, "generation_tasks") and canceller.is_alive():
        assert time.monotonic() < deadline, "the cancel never reached the delivery's row"
        time.sleep(0.02)
    # The delivery's second step: the job row. With the job row locked first by the
    # cancel, this is the deadlock PostgreSQL breaks by failing one of the two.
    delivery.execute(text("UPDATE generation_jobs SET completed_tasks = completed_tasks + 1 "
                          "WHERE id = :j"), {"j": job.id})
    delivery.execute(text("UPDATE generation_tasks SET status = 'succeeded', "
                          "finished_at = now() WHERE id = :id"), {"id": task_id})
    tx.commit()
    delivery.close()
    canceller.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    view = outcome["job"]
    assert isinstance(view, JobView)
    assert (view.status, view.completed_tasks, view.cancelled_tasks) == ("cancelled", 1, 3)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM generation_tasks WHERE job_id = :j "
            "GROUP BY status"), {"j": job.id}).all())
    assert statuses == {"succeeded": 1, "cancelled": 3}
