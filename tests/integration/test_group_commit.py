"""Group commit against a real PostgreSQL: claims and completions that arrive together
share one statement (core.db.group_commit), and each caller still gets exactly what its own
statement would have given: token guards, exactly-once counters, one winner per task."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import Engine, text

from core.config import Settings
from core.db import hotsql
from core.delivery import statements
from tests.integration.test_leases import HOLDER, _job, _row, run


def _claim(eng: Any, task: uuid.UUID) -> Any:
    return statements.claim(eng, task, lease_s=30, holder=HOLDER, max_attempts=5)


def _complete(eng: Any, claimed: statements.ClaimedTask) -> Any:
    return statements.complete(eng, claimed, image_path=f"{claimed.id}.png",
                             thumbnail_path=f"{claimed.id}.webp", latency_ms=1)


def _job_counts(engine: Engine, task: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT j.status, j.completed_tasks, j.failed_tasks, j.finished_at IS NOT NULL "
            "AS finished FROM generation_jobs j JOIN generation_tasks t ON t.job_id = j.id "
            "WHERE t.id = :id"), {"id": task}).one()


def test_concurrent_claims_and_completions_share_statements_and_count_once(
    settings: Settings, engine: Engine
) -> None:
    tasks = _job(settings, engine, 40)

    async def scenario(eng: Any) -> tuple[list[Any], list[bool], dict[str, Any]]:
        claimed = await asyncio.gather(*(_claim(eng, t) for t in tasks))
        done = await asyncio.gather(*(_complete(eng, c) for c in claimed))
        return claimed, done, (await hotsql.get(eng)).group_stats()

    claimed, done, stats = run(settings, scenario)
    assert all(c is not None for c in claimed) and done == [True] * 40
    assert [c.id for c in claimed] == tasks  # each caller got its own row
    assert len({c.token for c in claimed}) == 40
    for c in claimed[:3]:
        row = _row(engine, c.id)
        assert (row.status, row.claim_token, row.image_path) == (
            "succeeded", c.token, f"{c.id}.png")
    assert stats["claim_tasks"] == (1, 40) and stats["end_tasks"] == (1, 40)
    assert tuple(_job_counts(engine, tasks[0])) == ("completed", 40, 0, True)


def test_in_one_statement_a_stale_token_is_refused_and_the_others_complete(
    settings: Settings, engine: Engine
) -> None:
    tasks = _job(settings, engine, 3)

    async def scenario(eng: Any) -> list[bool]:
        claimed = [await _claim(eng, t) for t in tasks]
        stale = statements.ClaimedTask(**{**claimed[1].__dict__, "token": uuid.uuid4()})
        return list(await asyncio.gather(_complete(eng, claimed[0]), _complete(eng, stale),
                                         _complete(eng, claimed[2])))

    assert run(settings, scenario) == [True, False, True]
    assert _row(engine, tasks[1]).status == "running"
    assert tuple(_job_counts(engine, tasks[0]))[:3] == ("running", 2, 0)


def test_two_deliveries_of_one_task_arriving_together_claim_it_once(
    settings: Settings, engine: Engine
) -> None:
    (task,) = _job(settings, engine, 1)

    async def scenario(eng: Any) -> tuple[list[Any], list[bool], Any]:
        both = await asyncio.gather(_claim(eng, task), _claim(eng, task))
        winner = next(c for c in both if c is not None)
        loser = statements.ClaimedTask(**{**winner.__dict__, "token": uuid.uuid4()})
        done = await asyncio.gather(_complete(eng, winner), _complete(eng, winner),
                                    _complete(eng, loser))
        return list(both), list(done), await statements.state(eng, task)

    both, done, state = run(settings, scenario)
    assert sum(c is not None for c in both) == 1
    assert done == [True, False, False]  # the repeat finds it succeeded already
    assert (state.status, state.attempts) == ("succeeded", 1)
    assert tuple(_job_counts(engine, task))[:3] == ("completed", 1, 0)


def test_a_row_the_database_refuses_fails_alone(settings: Settings, engine: Engine) -> None:
    tasks = _job(settings, engine, 3)

    async def scenario(eng: Any) -> list[object]:
        claimed = [await _claim(eng, t) for t in tasks]
        # The middle one's latency_ms is past int4: the server refuses the whole
        # statement (22003).
        calls = [statements.fail(eng, c, code="x", message="m", latency_ms=2**40 if i == 1 else 1)
                 for i, c in enumerate(claimed)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    first, bad, last = run(settings, scenario)
    assert (first, last) == (True, True)
    assert "out of range" in str(bad)
    assert [_row(engine, t).status for t in tasks] == ["failed", "running", "failed"]
    assert tuple(_job_counts(engine, tasks[0]))[:3] == ("running", 0, 2)
