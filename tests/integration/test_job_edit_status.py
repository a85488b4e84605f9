"""Edit-and-resubmit against the status rule: the job's counters and status after the new
task ends, as the SQL of real deliveries writes them, agree with core.status and with the
task rows; the job notifies once per ending."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.errors import Conflict
from core.jobs import lifecycle, views
from core.jobs.edit import resubmit_task
from core.status import job_status_after
from tests.dashboard.conftest import deliver, submit
from tests.integration.test_end_to_end import assert_counters_match_rows

REFUSED = "[[demo:moderation_blocked]] a forbidden thing"


def _failed(engine: Engine, job_id: object) -> views.TaskView:
    [task] = views.list_tasks(job_id, status="failed", engine=engine)  # type: ignore[arg-type]
    return task


@pytest.mark.parametrize(("prompts", "edit", "ends"), [
    ([REFUSED], "a permitted thing", "completed_with_errors"),   # failed -> reopened -> ok
    ([REFUSED], REFUSED + " again", "failed"),                   # refused once more
    (["a chair", REFUSED], "a permitted thing", "completed_with_errors"),
])
def test_resubmitted_task_ends_the_job_by_the_same_rule(
    settings: Settings, engine: Engine, prompts: list[str], edit: str, ends: str,
) -> None:
    job = submit(settings, engine, prompts)
    deliver(settings, [t.id for t in views.list_tasks(job.id, engine=engine)])
    before = views.get_job(job.id, engine=engine)
    assert before.is_finished
    done = resubmit_task(job.id, _failed(engine, job.id).id, edit, submitted_by="test",
                         engine=engine, settings=settings)
    assert (done.job.status, done.job.total_tasks, done.job.finished_at) == (
        "running", len(prompts) + 1, None)
    assert_counters_match_rows(engine, str(job.id))
    deliver(settings, [done.task_id])
    after = views.get_job(job.id, engine=engine)
    assert after.status == ends == job_status_after(
        "running", total=after.total_tasks, completed=after.completed_tasks,
        failed=after.failed_tasks, cancelled=after.cancelled_tasks)
    assert after.finished_at is not None
    assert_counters_match_rows(engine, str(job.id))
    with engine.connect() as conn:
        ends_notified = conn.execute(text(
            "SELECT job_status FROM job_notifications WHERE job_id = :j ORDER BY id"),
            {"j": job.id}).scalars().all()
    assert ends_notified == [before.status, ends]  # one message per ending


def test_resubmit_while_the_job_runs_and_refusals_of_the_rule(settings: Settings,
                                                               engine: Engine) -> None:
    job = submit(settings, engine, ["a chair", REFUSED, "a lamp"])
    tasks = views.list_tasks(job.id, engine=engine)
    deliver(settings, [tasks[1].id])  # only the refusal has run
    done = resubmit_task(job.id, tasks[1].id, "a permitted thing", submitted_by="t",
                         engine=engine, settings=settings)
    assert (done.job.status, done.job.total_tasks, done.job.failed_tasks) == ("running", 4, 1)
    with pytest.raises(Conflict, match="only a failed task"):
        resubmit_task(job.id, tasks[0].id, "x", submitted_by="t", engine=engine,
                      settings=settings)
    deliver(settings, [tasks[0].id, tasks[2].id, done.task_id])
    final = views.get_job(job.id, engine=engine)
    assert (final.status, final.completed_tasks, final.failed_tasks) == (
        "completed_with_errors", 3, 1)
    assert_counters_match_rows(engine, str(job.id))
    cancelled = submit(settings, engine, [REFUSED, "a cup"])
    deliver(settings, [views.list_tasks(cancelled.id, engine=engine)[0].id])
    lifecycle.cancel_job(cancelled.id, engine=engine)
    with pytest.raises(Conflict, match="cancelled"):
        resubmit_task(cancelled.id, _failed(engine, cancelled.id).id, "x", submitted_by="t",
                      engine=engine, settings=settings)
