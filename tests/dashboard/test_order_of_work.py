"""The order of work on the dashboard under AppTest against a real PostgreSQL: priority and
spend cap at submit, the Queue page's order of work (priority, share, in flight, waiting,
spend, what each job waits for), and the Job page's priority / cap change."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, text

from core.config import Settings
from core.jobs import views
from core.jobs.schedule import set_schedule
from tests.dashboard.conftest import deliver, open_page, submit


def _job(engine: Engine, job_id: object) -> views.JobView:
    return views.get_job(job_id, engine=engine)  # type: ignore[arg-type]


def test_submit_sets_priority_and_cap(settings: Settings, engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a red chair\na lamp").run()
    at.selectbox(key="priority").set_value("high").run()
    at.number_input(key="max_cost_usd").set_value(5.0).run()
    at.button(key="submit").click().run()
    assert not at.exception
    with engine.connect() as conn:
        row = conn.execute(text("SELECT priority, max_cost_usd FROM generation_jobs")).one()
    assert (row.priority, row.max_cost_usd) == ("high", Decimal("5.0000"))


def test_queue_page_shows_the_order_of_work(settings: Settings, engine: Engine) -> None:
    big = submit(settings, engine, [f"big {i}" for i in range(6)])
    small = submit(settings, engine, ["small 1", "small 2"])
    set_schedule(small.id, priority="high", engine=engine)
    set_schedule(big.id, max_cost_usd="0", engine=engine)
    with engine.begin() as conn:  # the big job's images cost something: it is at its cap
        conn.execute(text("UPDATE generation_jobs SET spend_unit_usd = 0.05 WHERE id = :j"),
                     {"j": big.id})
    first_small = views.list_tasks(small.id, limit=1, engine=engine)[0]
    deliver(settings, [first_small.id])
    at = open_page("app_pages/queue.py")
    table = at.dataframe[0].value
    assert list(table["priority"]) == ["high", "normal"]  # higher priority listed first
    high, normal = table.iloc[0], table.iloc[1]
    assert high["share"] == "100%" and high["done"] == "1 / 2" and high["waiting"] == 1
    assert "its turn (high priority" in high["waits for"]
    assert normal["cap"] == "$0.00" and "spend cap reached" in normal["waits for"]


def test_job_page_changes_priority_and_cap(settings: Settings, engine: Engine) -> None:
    job = submit(settings, engine, ["a chair", "a lamp"])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    assert any("Priority **normal**" in c.value for c in at.caption)
    at.selectbox(key="sched_priority").set_value("low").run()
    at.number_input(key="sched_cap").set_value(12.5).run()
    at.button(key="sched_apply").click().run()
    assert not at.exception
    view = _job(engine, job.id)
    assert (view.priority, view.max_cost_usd) == ("low", Decimal("12.5000"))
    at.number_input(key="sched_cap").set_value(0.0).run()
    at.button(key="sched_apply").click().run()
    assert _job(engine, job.id).max_cost_usd is None  # 0 removes the cap


def test_a_lower_priority_job_is_told_who_goes_first(settings: Settings, engine: Engine) -> None:
    low = submit(settings, engine, ["low 1", "low 2"])
    submit(settings, engine, ["urgent 1", "urgent 2"])
    set_schedule(low.id, priority="low", engine=engine)
    table = open_page("app_pages/queue.py").dataframe[0].value
    low_row = table[table["priority"] == "low"].iloc[0]
    normal_row = table[table["priority"] == "normal"].iloc[0]
    assert low_row["waits for"] == ("normal-priority jobs first; at least one delivery every "
                                    f"{settings.PRIORITY_STARVATION_S:g} s "
                                    "(PRIORITY_STARVATION_S)")
    assert "its turn (normal priority" in normal_row["waits for"]
