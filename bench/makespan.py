"""Benchmark 2, makespan: 500 tasks, provider latency 1 s, concurrency C = 25.

The ideal is N * latency / C (20 s): every slot busy from the first claim to the last
answer. The ratio shows what the queue adds: claim rounds, HTTP, storage, commits. With
one process the 25 deliveries of a wave share one event loop, so each wave waits for
~25 x the CPU of a delivery; two processes (one per core, 13 + 12) halve that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, text

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    load_note,
    running_worker,
    submit,
    sync_engine,
    wait_finished,
    workdir,
)

N_TASKS = 500
LATENCY_S = 1.0
CONCURRENCY = 25
T = TypeVar("T")
GOAL_RATIO = 1.05  # was 1.1 before the delivery hot path was reworked
# The dispatcher-to-worker hand-off time is no longer read from the rows: the dispatcher's
# hold is a lease the worker's claim replaces, not a pushed next_attempt_at.


def run_scenario(processes: int, tag: str, read: Callable[[Connection], T]) -> tuple[Any, T]:
    """500 tasks, C = 25 in all split over ``processes`` worker processes (instances): the
    finished job's row, and what ``read`` takes from the task rows before the database is
    dropped."""
    shares = [CONCURRENCY // processes + (1 if i < CONCURRENCY % processes else 0)
              for i in range(processes)]
    with bench_database(tag) as url, workdir(tag) as tmp:
        engine = sync_engine(url)
        try:
            with contextlib.ExitStack() as stack:
                workers = [stack.enter_context(running_worker(
                    {**base_env(url, tmp), "DEMO_LATENCY_MS": str(int(LATENCY_S * 1000)),
                     "LOCAL_MAX_CONCURRENCY": str(share)}, tmp / f"worker{i}.log"))
                    for i, share in enumerate(shares)]
                job_id = submit(workers[0].url,
                                [f"makespan prompt {i}" for i in range(N_TASKS)])
                row = wait_finished(engine, job_id, timeout_s=120)
            with engine.connect() as conn:
                return row, read(conn)
        finally:
            engine.dispose()


def measure(processes: int) -> Figure:
    row, busy = run_scenario(processes, "makespan", lambda conn: conn.execute(text(
        "SELECT avg(latency_ms)::float AS latency_ms, "
        "sum(EXTRACT(EPOCH FROM finished_at - started_at))::float AS busy_s "
        "FROM generation_tasks")).one())
    ideal_s = N_TASKS * LATENCY_S / CONCURRENCY
    done = row.completed_tasks == N_TASKS and row.finished_at is not None
    makespan_s = float(row.run_s) if row.run_s is not None else None
    ratio = makespan_s / ideal_s if makespan_s is not None else None
    note = (f"makespan {makespan_s:.1f} s vs ideal {ideal_s:.0f} s; mean task "
            f"{busy.latency_ms:.0f} ms claim to stored, {busy.busy_s / makespan_s:.1f} "
            "in flight on average"
            if makespan_s else "unfinished")
    where = "1 worker process" if processes == 1 else f"{processes} worker processes"
    return figure(f"makespan / ideal (500 tasks, 1 s, C=25, {where})", ratio, "x",
                  goal=f"<= {GOAL_RATIO:g}", check=lambda v: v <= GOAL_RATIO and done,
                  note=f"{note}; {load_note()}")


def run() -> list[Figure]:
    return [measure(1), measure(2)]


if __name__ == "__main__":
    run()
