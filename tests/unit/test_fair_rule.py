"""The fair-share rule (core.dispatch.fair), the spend cap projection, the
schedule's input checks and BUDGET_DAILY_USD_BY_KEY's form (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.config import key_budgets
from core.dispatch.fair import JobQueue, order_key, pick, starved, within_cap
from core.errors import ConfigError, InvalidInput
from core.jobs.schedule import clean_max_cost, clean_priority

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _job(key: str, priority: str = "normal", in_flight: int = 0, waiting: int = 50,
         age_s: int = 0, is_starved: bool = False, left: int | None = None,
         **cap: Decimal) -> JobQueue:
    return JobQueue(key=key, priority=priority, created=T0 - timedelta(seconds=age_s),
                    in_flight=in_flight, waiting=[T0] * waiting, starved=is_starved,
                    tasks_left=in_flight + waiting if left is None else left, **cap)


@pytest.mark.parametrize(("jobs", "slots", "expected"), [
    # a new job gets the free slots until it has as many in flight as the running one
    ([_job("big", in_flight=25, age_s=60), _job("small")], 10, {"small": 10}),
    # then equal turns
    ([_job("big", in_flight=12, age_s=60), _job("small", in_flight=12)], 4,
     {"big": 2, "small": 2}),
    # high first, every slot: it only waits for slots to free
    ([_job("big", in_flight=1, age_s=60), _job("urgent", "high")], 5, {"urgent": 5}),
    ([_job("low", "low"), _job("urgent", "high")], 3, {"urgent": 3}),
    # a starved job gets one slot even beside a high one, and only one
    ([_job("low", "low", is_starved=True), _job("urgent", "high")], 3,
     {"low": 1, "urgent": 2}),
    # level turns go to the job with fewer tasks left, then to the older job
    ([_job("big", in_flight=12, age_s=60), _job("small", in_flight=12, waiting=10)], 1,
     {"small": 1}),
    ([_job("new"), _job("old", age_s=10)], 1, {"old": 1}),
    # a job runs out of waiting tasks: the others take the rest
    ([_job("tiny", waiting=1), _job("big", age_s=5)], 4, {"tiny": 1, "big": 3}),
])
def test_pick_shares_slots(jobs: list[JobQueue], slots: int, expected: dict[str, int]) -> None:
    got: dict[str, int] = {}
    for key in pick(jobs, slots):
        got[key] = got.get(key, 0) + 1
    assert got == expected


def _key(nth: int, priority: str, is_starved: bool) -> tuple[object, ...]:
    return order_key(nth=nth, priority=priority, starved=is_starved, tasks_left=5,
                     job_created=T0, due=T0)


def test_a_starved_jobs_first_delivery_comes_before_priority() -> None:
    assert _key(1, "low", True) < _key(2, "high", False)
    assert _key(1, "low", False) > _key(2, "high", False)  # not starved: priority rules
    assert _key(2, "low", True) > _key(3, "high", False)  # only its first delivery


@pytest.mark.parametrize(("in_flight", "waited_s", "expected"), [
    (0, 30, True),    # the period has passed with nothing of it running
    (0, 29.9, False),
    (1, 600, False),  # something of it runs: slowed, not starved
])
def test_starved(in_flight: int, waited_s: float, expected: bool) -> None:
    assert starved(in_flight=in_flight, waiting_since=T0 - timedelta(seconds=waited_s),
                   now=T0, starvation_s=30) is expected


@pytest.mark.parametrize(("spent", "unit", "nth", "cap", "ok"), [
    (Decimal("0.20"), Decimal("0.05"), 2, Decimal("0.30"), True),    # exactly the cap
    (Decimal("0.20"), Decimal("0.05"), 3, Decimal("0.30"), False),   # one image over
    (Decimal("5"), Decimal("0"), 10, Decimal("1"), False),           # already over
    (Decimal("5"), Decimal("1"), 10, None, True),                    # no cap
])
def test_cap_projection(spent: Decimal, unit: Decimal, nth: int, cap: Decimal | None,
                        ok: bool) -> None:
    assert within_cap(spent_usd=spent, unit_usd=unit, nth=nth, max_cost_usd=cap) is ok


def test_capped_job_offers_only_what_fits() -> None:
    capped = _job("capped", in_flight=1, spent_usd=Decimal("0.10"),
                  unit_usd=Decimal("0.05"), max_cost_usd=Decimal("0.30"))
    assert pick([capped], 10) == ["capped"] * 3


@pytest.mark.parametrize("bad", ["urgent", "", 3, None])
def test_a_bad_priority_names_the_field(bad: object) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_priority(bad)
    assert err.value.field == "priority"


@pytest.mark.parametrize("bad", [-1, "ten", float("nan"), float("inf"), True, 10**9])
def test_a_bad_cap_names_the_field(bad: object) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_max_cost(bad)
    assert err.value.field == "max_cost_usd"


def test_key_budgets_form() -> None:
    assert key_budgets("alice=50, ci=2.5") == {"alice": 50.0, "ci": 2.5}
    assert key_budgets(None) == {}
    for bad in ("alice", "alice=-1", "=5", "alice=lots"):
        with pytest.raises(ConfigError, match="BUDGET_DAILY_USD_BY_KEY: entry 1"):
            key_budgets(bad)
