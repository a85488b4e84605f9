"""Owned leases against a real PostgreSQL: the claim's takeover and not-due refusals, the
token guard, and take_over_abandoned's SQL checked against the pure rule (core.delivery.leases)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core import db
from core.config import Settings
from core.delivery import statements
from core.delivery.leases import crash_verdict
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec

HOLDER = statements.Holder(owner="test-host:1", boot=uuid.uuid4())


def run(settings: Settings, make: Any) -> Any:
    """Run ``make(async_engine)`` on a fresh loop with its own engine."""
    async def main() -> Any:
        engine = db.get_async_engine(db.resolve_database_url(settings))
        try:
            return await make(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _job(settings: Settings, engine: Engine, n: int) -> list[uuid.UUID]:
    job = lifecycle.submit_batch(BatchSpec(tuple(f"p {i}" for i in range(n)), "none", 1),
                            settings=settings, engine=engine)
    with engine.connect() as conn:
        return [r.id for r in conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id=:j ORDER BY prompt_index"),
            {"j": job.id})]


def _set(engine: Engine, task_id: uuid.UUID, sql: str, **binds: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE generation_tasks SET {sql} WHERE id = :id"),
                     {"id": task_id, **binds})


def _row(engine: Engine, task_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM generation_tasks WHERE id=:id"),
                            {"id": task_id}).one()


def test_claim_records_owner_and_token_and_refuses_before_next_attempt_at(
    settings: Settings, engine: Engine
) -> None:
    (task,) = _job(settings, engine, 1)
    _set(engine, task, "next_attempt_at = now() + interval '20 s'")

    async def early(eng: Any) -> Any:
        claimed = await statements.claim(eng, task, lease_s=30, holder=HOLDER, max_attempts=5)
        return claimed, await statements.state(eng, task)

    claimed, state = run(settings, early)
    assert claimed is None and state.status == "queued" and 18 < state.due_in_s <= 20
    _set(engine, task, "next_attempt_at = now()")

    async def due(eng: Any) -> Any:
        return await statements.claim(eng, task, lease_s=30, holder=HOLDER, max_attempts=5)

    claimed = run(settings, due)
    row = _row(engine, task)
    assert (row.status, row.attempts, row.lease_owner, row.lease_boot, row.claim_token) == (
        "running", 1, HOLDER.owner, HOLDER.boot, claimed.token)


def test_renew_complete_fail_release_need_the_claims_token(
    settings: Settings, engine: Engine
) -> None:
    (task,) = _job(settings, engine, 1)

    async def scenario(eng: Any) -> list[bool]:
        claimed = await statements.claim(eng, task, lease_s=30, holder=HOLDER, max_attempts=5)
        assert claimed is not None
        stale = statements.ClaimedTask(**{**claimed.__dict__, "token": uuid.uuid4()})
        return [
            await statements.renew(eng, stale, lease_s=30),
            await statements.release(eng, stale, code="x", message="x", delay_s=0,
                                   latency_ms=None),
            await statements.fail(eng, stale, code="x", message="x", latency_ms=None),
            await statements.complete(eng, stale, image_path="a", thumbnail_path="b",
                                    latency_ms=1),
            await statements.renew(eng, claimed, lease_s=30),
            await statements.complete(eng, claimed, image_path="a", thumbnail_path="b",
                                    latency_ms=1),
        ]

    assert run(settings, scenario) == [False, False, False, False, True, True]
    assert _row(engine, task).status == "succeeded"


CASES = list(itertools.product((1, 3, 5, 7), (0, 2), (0, 4)))  # attempts, free, crashes


@pytest.mark.parametrize("max_attempts", [1, 5])
def test_take_over_abandoned_follows_the_pure_rule(
    settings: Settings, engine: Engine, max_attempts: int
) -> None:
    tasks = _job(settings, engine, len(CASES))
    for task, (attempts, free, crashes) in zip(tasks, CASES, strict=True):
        _set(engine, task, "status='running', attempts=:a, free_attempts=:f, crashes=:c, "
             "lease_until = now() - interval '1 s', claim_token = gen_random_uuid()",
             a=attempts, f=free, c=crashes)

    async def sweep(eng: Any) -> list[statements.TakenOver]:
        return await statements.take_over_abandoned(eng, max_attempts=max_attempts)

    taken = {t.id: t for t in run(settings, sweep)}
    assert set(taken) == set(tasks)
    for task, (attempts, free, crashes) in zip(tasks, CASES, strict=True):
        verdict = crash_verdict(attempts=attempts, free_attempts=free, crashes=crashes,
                                max_attempts=max_attempts)
        row = _row(engine, task)
        expected = "failed" if verdict.action == "fail" else "queued"
        assert (row.status, row.crashes, taken[task].status) == (
            expected, verdict.crashes, expected), (attempts, free, crashes)
        assert row.claim_token is None and row.lease_until is None
        if verdict.action == "fail":
            assert (row.last_error_code, row.last_error) == ("worker_crashed", verdict.message)
    failed = sum(1 for t in taken.values() if t.status == "failed")
    with engine.connect() as conn:
        job = conn.execute(text("SELECT failed_tasks, status FROM generation_jobs")).one()
    assert job.failed_tasks == failed


def test_claim_takeover_counts_a_crash_and_stops_at_max_attempts(
    settings: Settings, engine: Engine
) -> None:
    (task,) = _job(settings, engine, 1)
    _set(engine, task, "status='running', attempts=2, lease_until = now() - interval '1 s'")

    async def take(eng: Any) -> Any:
        return await statements.claim(eng, task, lease_s=30, holder=HOLDER, max_attempts=3)

    claimed = run(settings, take)
    assert claimed is not None and claimed.attempt == 3 and _row(engine, task).crashes == 1
    _set(engine, task, "lease_until = now() - interval '1 s'")
    assert run(settings, take) is None  # 3 charged attempts: the takeover is refused
    assert _row(engine, task).status == "running"


def test_a_restarted_process_frees_its_previous_boots_rows_only(
    settings: Settings, engine: Engine
) -> None:
    mine_running, mine_held, other, current = _job(settings, engine, 4)
    old_boot = uuid.uuid4()
    live = "lease_until = now() + interval '30 s'"
    _set(engine, mine_running, f"status='running', attempts=1, {live}, lease_owner=:o, "
         "lease_boot=:b", o=HOLDER.owner, b=old_boot)
    _set(engine, mine_held, f"{live}, lease_owner=:o, lease_boot=:b", o=HOLDER.owner,
         b=old_boot)
    _set(engine, other, f"status='running', attempts=1, {live}, lease_owner='other:2', "
         "lease_boot=:b", b=old_boot)
    _set(engine, current, f"status='running', attempts=1, {live}, lease_owner=:o, "
         "lease_boot=:b", o=HOLDER.owner, b=HOLDER.boot)

    async def boot(eng: Any) -> list[statements.TakenOver]:
        return await statements.take_over_abandoned(eng, max_attempts=5, holder=HOLDER)

    taken = run(settings, boot)
    assert [t.id for t in taken] == [mine_running]
    assert (_row(engine, mine_running).status, _row(engine, mine_running).crashes) == (
        "queued", 1)
    assert _row(engine, mine_held).lease_until is None  # the dispatcher's hold dropped
    assert _row(engine, other).status == "running"  # another process's live lease
    assert _row(engine, current).status == "running"  # this boot's own


def test_sync_takeover_for_the_sweeper_hands_rows_back_pending_under_a_new_generation(
    settings: Settings, engine: Engine
) -> None:
    expired, live = _job(settings, engine, 2)
    _set(engine, expired, "status='running', attempts=1, lease_until = now() - interval '1 s'")
    _set(engine, live, "status='running', attempts=1, lease_until = now() + interval '30 s'")
    taken = statements.take_over_abandoned_sync(engine, max_attempts=5)
    assert [(t.id, t.status, t.dispatch_generation) for t in taken] == [(expired, "pending", 1)]
    assert _row(engine, live).status == "running"
