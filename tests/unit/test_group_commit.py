"""core.db.group_commit: which rows go together, and what each caller gets back."""

from __future__ import annotations

import asyncio

import pytest

from core.db import group_commit
from core.db.group_commit import Coalescer


def _waiting(keys: list[str]) -> list[group_commit._Waiting[str, str]]:
    loop = asyncio.new_event_loop()
    try:
        return [group_commit._Waiting(f"row{i}", key, loop.create_future())
                for i, key in enumerate(keys)]
    finally:
        loop.close()


def test_a_batch_takes_each_key_once_in_arrival_order_and_at_most_max_rows() -> None:
    waiting = _waiting(["a", "b", "a", "c", "d"])
    batch, rest = group_commit.take_batch(waiting, max_batch=3)
    assert [w.item for w in batch] == ["row0", "row1", "row3"]  # the second "a" waits
    assert [w.item for w in rest] == ["row2", "row4"]


class Recorder:
    """A batch runner that records its batches; ``fail`` raises for a batch."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)  # the statement's round trip
        if self.fail is not None and len(items) > 1:
            raise self.fail
        if self.fail is not None and items == ["bad"]:
            raise self.fail
        return [f"done {i}" for i in items]


def test_callers_of_one_turn_share_a_statement_and_later_ones_the_next() -> None:
    runner = Recorder()

    async def main() -> list[str]:
        group: Coalescer[str, str] = Coalescer(runner, retry_alone=lambda exc: True)
        first = [asyncio.create_task(group.submit(f"t{i}", f"t{i}")) for i in range(3)]
        await asyncio.sleep(0.001)  # the first statement is on its way
        later = [asyncio.create_task(group.submit(f"u{i}", f"u{i}")) for i in range(2)]
        return await asyncio.gather(*first, *later)

    results = asyncio.run(main())
    assert results == ["done t0", "done t1", "done t2", "done u0", "done u1"]
    assert runner.batches == [["t0", "t1", "t2"], ["u0", "u1"]]


def test_an_idle_group_sends_a_lone_row_at_once() -> None:
    runner = Recorder()

    async def main() -> tuple[str, float]:
        group: Coalescer[str, str] = Coalescer(runner, retry_alone=lambda exc: True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await group.submit("t", "t")
        return result, loop.time() - started

    result, took_s = asyncio.run(main())
    assert result == "done t" and runner.batches == [["t"]]
    assert took_s < 0.05  # the round trip, no coalescing wait


def test_a_refused_batch_runs_row_by_row_so_only_the_bad_row_fails() -> None:
    runner = Recorder(fail=ValueError("bad value"))

    async def main() -> list[object]:
        group: Coalescer[str, str] = Coalescer(runner, retry_alone=lambda exc: True)
        calls = [group.submit(item, item) for item in ("ok1", "bad", "ok2")]
        return await asyncio.gather(*calls, return_exceptions=True)

    ok1, bad, ok2 = asyncio.run(main())
    assert (ok1, ok2) == ("done ok1", "done ok2")
    assert isinstance(bad, ValueError)
    assert runner.batches == [["ok1", "bad", "ok2"], ["ok1"], ["bad"], ["ok2"]]


def test_an_unknown_outcome_reaches_every_caller_and_is_not_run_again() -> None:
    runner = Recorder(fail=ConnectionError("connection lost"))

    async def main() -> list[object]:
        group: Coalescer[str, str] = Coalescer(runner, retry_alone=lambda exc: False)
        return await asyncio.gather(*(group.submit(i, i) for i in ("a", "b")),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ConnectionError) for r in results)
    assert runner.batches == [["a", "b"]]


def test_a_cancelled_caller_does_not_stop_the_others_statement() -> None:
    runner = Recorder()

    async def main() -> str:
        group: Coalescer[str, str] = Coalescer(runner, retry_alone=lambda exc: True)
        gone = asyncio.create_task(group.submit("gone", "gone"))
        kept = asyncio.create_task(group.submit("kept", "kept"))
        await asyncio.sleep(0.001)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == "done kept"
    assert runner.batches == [["gone", "kept"]]
