"""Benchmark 2, makespan: 500 tasks, provider latency 1 s, concurrency C = 25.

The ideal is N * latency / C (20 s): every slot busy from the first claim to the last
answer. The ratio shows what the queue adds: claim rounds, HTTP, storage, commits.
"""

from __future__ import annotations

from sqlalchemy import text

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


def run() -> list[Figure]:
    with bench_database("makespan") as url, workdir("makespan") as tmp:
        env = {**base_env(url, tmp), "DEMO_LATENCY_MS": str(int(LATENCY_S * 1000)),
               "LOCAL_MAX_CONCURRENCY": str(CONCURRENCY)}
        engine = sync_engine(url)
        try:
            with running_worker(env, tmp / "worker.log") as worker:
                job_id = submit(worker.url, [f"makespan prompt {i}" for i in range(N_TASKS)])
                row = wait_finished(engine, job_id, timeout_s=120)
            with engine.connect() as conn:
                busy = conn.execute(text(
                    "SELECT avg(latency_ms)::float AS latency_ms, "
                    "sum(EXTRACT(EPOCH FROM finished_at - started_at))::float AS busy_s "
                    "FROM generation_tasks")).one()
        finally:
            engine.dispose()
    ideal_s = N_TASKS * LATENCY_S / CONCURRENCY
    done = row.completed_tasks == N_TASKS and row.finished_at is not None
    makespan_s = float(row.run_s) if row.run_s is not None else None
    ratio = makespan_s / ideal_s if makespan_s is not None else None
    note = (f"makespan {makespan_s:.1f} s vs ideal {ideal_s:.0f} s; mean task "
            f"{busy.latency_ms:.0f} ms claim to stored, {busy.busy_s / makespan_s:.1f} "
            "in flight on average" if makespan_s else "unfinished")
    return [figure("makespan / ideal (500 tasks, 1 s, C=25)", ratio, "x", goal="<= 1.1",
                   check=lambda v: v <= 1.1 and done, note=f"{note}; {load_note()}")]


if __name__ == "__main__":
    run()
