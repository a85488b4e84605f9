"""The fair-share claim (dispatch_claim_due, window_pick) against its rule
(core.dispatch.fair.pick), spend caps in the claim, priority changes, against a real
PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.db.queries import q
from core.dispatch.fair import JobQueue, pick, starved
from core.jobs import lifecycle
from core.jobs.schedule import Schedule, set_schedule
from core.jobs.validation import BatchSpec


def _submit(settings: Settings, engine: Engine, n: int, priority: str = "normal",
            cap: Decimal | None = None) -> uuid.UUID:
    spec = BatchSpec(prompts=[f"p{i}" for i in range(n)], style="none", count_per_prompt=1)
    return lifecycle.submit_batch(spec, settings=settings, engine=engine,
                             schedule=Schedule(priority=priority, max_cost_usd=cap)).id


def _hold(engine: Engine, job_id: uuid.UUID, n: int) -> None:
    """n of the job's tasks in flight (a dispatcher's hold)."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE generation_tasks SET lease_until = now() + interval '60 s', "
            "lease_owner = 'other' WHERE id IN (SELECT id FROM generation_tasks "
            "WHERE job_id = :j ORDER BY prompt_index LIMIT :n)"), {"j": job_id, "n": n})


STARVATION_S = 30.0


def _claim(engine: Engine, settings: Settings, limit: int) -> list[Any]:
    with engine.begin() as conn:
        return conn.execute(q("dispatch_claim_due"), {
            "limit": limit, "visibility_s": 30, "queue_name": settings.QUEUE_NAME,
            "starvation_s": STARVATION_S, "owner": "me", "boot": uuid.uuid4()}).all()


def _age(engine: Engine, job_id: uuid.UUID, seconds: float) -> None:
    """The job was submitted ``seconds`` ago."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE generation_jobs SET created_at = now() - "
                          "make_interval(secs => :s) WHERE id = :j"), {"s": seconds, "j": job_id})


def _job_of(engine: Engine, rows: list[Any]) -> Counter[str]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT job_id FROM generation_tasks WHERE id = ANY(:ids)"),
                             {"ids": [r.id for r in rows]}).all()
    return Counter(str(r.job_id) for r in found)


def _queues(engine: Engine) -> list[JobQueue]:
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT j.id, j.priority, j.created_at, now() AS now,
                   j.total_tasks - j.completed_tasks - j.failed_tasks - j.cancelled_tasks
                       AS tasks_left,
                   (SELECT max(f.finished_at) FROM generation_tasks f
                     WHERE f.job_id = j.id) AS last_finished,
                   count(*) FILTER (WHERE t.lease_until IS NOT NULL) AS in_flight,
                   array_agg(t.next_attempt_at ORDER BY t.next_attempt_at)
                       FILTER (WHERE t.lease_until IS NULL) AS waiting
              FROM generation_jobs j JOIN generation_tasks t ON t.job_id = j.id
             WHERE t.status = 'queued' GROUP BY j.id""")).all()
    return [JobQueue(key=str(r.id), priority=r.priority, created=r.created_at,
                     in_flight=int(r.in_flight), waiting=r.waiting or [],
                     tasks_left=int(r.tasks_left),
                     starved=starved(in_flight=int(r.in_flight),
                                     waiting_since=r.last_finished or r.created_at,
                                     now=r.now, starvation_s=STARVATION_S))
            for r in rows]


@pytest.mark.parametrize("slots", [1, 3, 7, 12, 40])
def test_claim_shares_as_the_rule_says(settings: Settings, engine: Engine, slots: int) -> None:
    big = _submit(settings, engine, 30)
    _submit(settings, engine, 10)  # a second normal job, none in flight
    _submit(settings, engine, 10, "high")
    low = _submit(settings, engine, 5, "low")
    starving = _submit(settings, engine, 5, "low")
    _age(engine, starving, 2 * STARVATION_S)
    _hold(engine, big, 8)
    _hold(engine, low, 1)
    expected = Counter(pick(_queues(engine), slots))
    assert _job_of(engine, _claim(engine, settings, slots)) == expected


def test_equal_priority_jobs_share_equally_and_high_goes_first(settings: Settings,
                                                               engine: Engine) -> None:
    big = _submit(settings, engine, 60)
    small = _submit(settings, engine, 20)
    _hold(engine, big, 10)  # the big job already runs 10
    got = _job_of(engine, _claim(engine, settings, 10))
    # round-robin: the small one catches up first (10 each in flight), then equal turns
    assert got == {str(small): 10}
    got = _job_of(engine, _claim(engine, settings, 6))
    assert got == {str(small): 3, str(big): 3}
    set_schedule(small, priority="high", engine=engine)
    got = _job_of(engine, _claim(engine, settings, 4))
    assert got == {str(small): 4}


def test_high_priority_takes_every_slot_and_low_priority_is_not_starved(
        settings: Settings, engine: Engine) -> None:
    low = _submit(settings, engine, 10, "low")
    high = _submit(settings, engine, 50, "high")
    assert _job_of(engine, _claim(engine, settings, 8)) == {str(high): 8}
    # nothing of the low job ran for the starvation period: its next delivery goes first
    _age(engine, low, STARVATION_S + 1)
    assert _job_of(engine, _claim(engine, settings, 8)) == {str(low): 1, str(high): 7}
    # one of it in flight: slowed, not starved, so the slots go to the high job again
    assert _job_of(engine, _claim(engine, settings, 8)) == {str(high): 8}
    with engine.begin() as conn:  # its delivery finishes: the period starts again
        conn.execute(text("UPDATE generation_tasks SET status = 'succeeded', "
                          "lease_until = NULL, finished_at = now() "
                          "WHERE job_id = :j AND lease_until IS NOT NULL"), {"j": low})
    assert _job_of(engine, _claim(engine, settings, 8)) == {str(high): 8}
    with engine.begin() as conn:
        conn.execute(text("UPDATE generation_tasks SET finished_at = now() - "
                          "make_interval(secs => :s) WHERE job_id = :j "
                          "AND finished_at IS NOT NULL"), {"s": STARVATION_S + 1, "j": low})
    assert _job_of(engine, _claim(engine, settings, 8)) == {str(low): 1, str(high): 7}


def test_spend_cap_stops_the_claim_and_raising_it_resumes(settings: Settings,
                                                          engine: Engine) -> None:
    job = _submit(settings, engine, 20, cap=Decimal("0.05"))
    with engine.begin() as conn:  # the demo model is free: give its images a price
        conn.execute(text("UPDATE generation_jobs SET spend_unit_usd = 0.01 WHERE id = :j"),
                     {"j": job})
    assert len(_claim(engine, settings, 20)) == 5  # 5 x $0.01 in flight = the cap
    assert _claim(engine, settings, 20) == []
    with engine.begin() as conn:  # two finished; their spend is counted, not freed
        conn.execute(text("UPDATE generation_jobs SET completed_tasks = 2 WHERE id = :j"),
                     {"j": job})
        conn.execute(text("UPDATE generation_tasks SET status = 'succeeded', lease_until = NULL"
                          " WHERE id IN (SELECT id FROM generation_tasks WHERE job_id = :j"
                          " AND lease_until IS NOT NULL LIMIT 2)"), {"j": job})
    assert _claim(engine, settings, 20) == []
    set_schedule(job, max_cost_usd="0.08", engine=engine)
    assert len(_claim(engine, settings, 20)) == 3
    with engine.connect() as conn:
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM generation_tasks GROUP BY status")).all())
    assert "failed" not in statuses  # held tasks wait, they never fail


def test_budget_hold_stops_every_job(settings: Settings, engine: Engine) -> None:
    _submit(settings, engine, 5)
    with engine.begin() as conn:
        conn.execute(q("set_spend_hold"), {"scope": "daily", "held": True,
                                           "spent_usd": 10, "limit_usd": 10})
    assert _claim(engine, settings, 5) == []
    with engine.begin() as conn:
        conn.execute(q("set_spend_hold"), {"scope": "daily", "held": False,
                                           "spent_usd": 10, "limit_usd": 20})
    assert len(_claim(engine, settings, 5)) == 5


def test_window_refill_fills_only_the_room_in_fair_order(settings: Settings,
                                                         engine: Engine) -> None:
    """Cloud Tasks mode's window_pick: queued rows are in the window; pending ones wait."""
    big = _submit(settings, engine, 10)
    small = _submit(settings, engine, 10)
    with engine.begin() as conn:  # the big job has 5 in the queue, the rest wait
        conn.execute(text("UPDATE generation_tasks SET status = 'pending' WHERE job_id = :s "
                          "OR (job_id = :b AND prompt_index >= 5)"), {"s": small, "b": big})

    def refill() -> list[Any]:
        with engine.begin() as conn:
            conn.execute(q("window_lock"))
            return conn.execute(q("window_pick"), {"window": 8, "hold_s": 30,
                                                   "starvation_s": STARVATION_S}).all()

    first = refill()
    assert _job_of(engine, first) == {str(small): 3}  # the room, to the job with fewest
    assert refill() == []  # held rows count: the window is full
    with engine.begin() as conn:  # the big job's 5 finish
        conn.execute(text("UPDATE generation_tasks SET status = 'succeeded' "
                          "WHERE job_id = :b AND status = 'queued'"), {"b": big})
    # round-robin evens the counts: big 4, small 3 + 1 (a tie goes to the older job)
    assert _job_of(engine, refill()) == {str(big): 4, str(small): 1}


def test_a_key_budget_holds_only_that_keys_jobs(settings: Settings, engine: Engine) -> None:
    from core.jobs.meta import JobMeta

    spec = BatchSpec(prompts=["a", "b"], style="none", count_per_prompt=1)
    alice = lifecycle.submit_batch(spec, settings=settings, engine=engine,
                              meta=JobMeta(submitted_by="alice")).id
    bob = lifecycle.submit_batch(spec, settings=settings, engine=engine,
                            meta=JobMeta(submitted_by="bob")).id
    with engine.begin() as conn:
        conn.execute(q("set_spend_hold"), {"scope": "key:alice", "held": True,
                                           "spent_usd": 5, "limit_usd": 5})
    assert _job_of(engine, _claim(engine, settings, 10)) == {str(bob): 2}
    assert alice not in {uuid.UUID(k) for k in _job_of(engine, _claim(engine, settings, 10))}
