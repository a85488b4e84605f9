"""Benchmark 4, queue overhead: how many tasks per second the whole path carries when the
model answers at once, beside PostgreSQL's own ceiling for the same statements (pgbench)
and procrastinate running a no-op job on the same server, in the same run.

- end to end: a real worker process with its in-process dispatcher; demo model, 16 px
  image, no latency: dispatch claim -> HTTP POST -> claim -> draw + thumbnail -> two file
  writes -> complete (+ job counter). tasks/s = N / (last finish - first start).
- pgbench: the dispatcher's claim, the worker's claim and the completion with its job
  counter, each its own transaction as in the real path, prepared statements.
- procrastinate: N no-op jobs deferred in one batch, one async worker, tasks/s from the
  worker's start to the queue being empty.

Also records the worker's CPU seconds per task (for the cost model, bench/cost.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from sqlalchemy import text

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    libpq,
    load_note,
    postgres_cpu_s,
    running_worker,
    submit,
    sync_engine,
    transactions,
    wait_finished,
    workdir,
)

N_TASKS = 2000
CONCURRENCY = 32
PGBENCH_S = 8
PGBENCH_CLIENTS = 8
PROCRASTINATE_JOBS = 2000
GOAL_TASKS_PER_S = 300.0
# Worker CPU per task on this path (dispatch, HTTP, claim, store, complete).
GOAL_CPU_MS_PER_TASK = 2.0
# Filled in by run(): the cost benchmark reads it.
MEASURED: dict[str, float] = {}

PGBENCH_SCRIPT = """\
UPDATE generation_tasks t SET lease_until = now() + make_interval(secs => 30)
 WHERE t.id IN (SELECT id FROM generation_tasks
                 WHERE status = 'queued' AND next_attempt_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING t.id AS task_id \\gset
{claim}
{complete}
"""


def _named(sql_name: str) -> str:
    from core.db.queries import sql

    return sql(sql_name)


def end_to_end(processes: int = 1) -> tuple[float | None, float | None]:
    """tasks/s and worker CPU-seconds per task with ``processes`` worker processes, each
    dispatching to itself (as instances would), all on one database. Also records the
    database's side per task (MEASURED): transactions, and the embedded server's CPU."""
    with bench_database("overhead") as url, workdir("overhead") as tmp:
        env = {**base_env(url, tmp), "LOCAL_MAX_CONCURRENCY": str(CONCURRENCY // processes),
               "DB_POOL_SIZE": str(CONCURRENCY // processes + 2)}
        engine = sync_engine(url)
        try:
            with contextlib.ExitStack() as stack:
                workers = [stack.enter_context(running_worker(env, tmp / f"worker{i}.log"))
                           for i in range(processes)]
                time.sleep(1.0)  # the statistics collector's lag (transactions())
                xacts0, pg0 = transactions(url), postgres_cpu_s()
                cpu0 = sum(w.cpu_s() for w in workers)
                job_id = submit(workers[0].url, [f"overhead {i}" for i in range(N_TASKS)])
                row = wait_finished(engine, job_id, timeout_s=240, interval_s=0.05)
                cpu_s = sum(w.cpu_s() for w in workers) - cpu0
                pg1 = postgres_cpu_s()
                time.sleep(1.0)
                # The submit's and the polls' own transactions are in it (a few dozen).
                MEASURED[f"pg_xacts_per_task_{processes}"] = (
                    transactions(url) - xacts0) / N_TASKS
                if pg0 is not None and pg1 is not None:
                    MEASURED[f"pg_cpu_s_per_task_{processes}"] = (pg1 - pg0) / N_TASKS
            with engine.connect() as conn:
                span_s = conn.execute(text(
                    "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float "
                    "FROM generation_tasks WHERE status = 'succeeded'")).scalar()
        finally:
            engine.dispose()
    if row.completed_tasks != N_TASKS or not span_s:
        return None, None
    return N_TASKS / span_s, cpu_s / N_TASKS


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None


def _pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    import pgserver  # type: ignore[import-untyped]

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
    return str(bundled) if bundled.exists() else None


def pgbench_ceiling() -> float | None:
    binary = _pgbench_binary()
    if binary is None:
        return None
    claim = (_named("claim_task").strip().rstrip(";")
             .replace(":lease_s", "30")
             .replace(":attempt_floor", "0").replace(":max_attempts", "5")
             .replace(":owner", "'bench:1'")
             .replace(":boot", "'00000000-0000-0000-0000-0000000000b0'")
             .replace(":token", "'00000000-0000-0000-0000-0000000000a0'") + ";")
    complete = (_named("complete_task").strip().rstrip(";")
                .replace(":image_path", "'a.png'").replace(":thumbnail_path", "'a.webp'")
                .replace(":latency_ms", "1").replace(":input_tokens", "NULL")
                .replace(":output_tokens", "NULL")
                .replace(":token", "'00000000-0000-0000-0000-0000000000a0'") + ";")
    script = PGBENCH_SCRIPT.format(claim=_one_line(claim), complete=_one_line(complete))
    with bench_database("pgbench") as url, workdir("pgbench") as tmp:
        engine = sync_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO generation_jobs (id, status, total_tasks, style, "
                    "count_per_prompt, provider, model, size, quality) VALUES "
                    "('00000000-0000-0000-0000-000000000001', 'running', 1000000, 'none', 1, "
                    "'demo', 'demo', '1024x1024', 'low')"))
                conn.execute(text(
                    "INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, "
                    "prompt, style, status, next_attempt_at) SELECT gen_random_uuid(), "
                    "'00000000-0000-0000-0000-000000000001', g, 0, 'p', 'none', 'queued', "
                    "now() - interval '1 minute' FROM generate_series(1, 200000) g"))
                conn.execute(text("ANALYZE"))
        finally:
            engine.dispose()
        path = tmp / "claim_complete.sql"
        path.write_text(script)
        result = subprocess.run(
            [binary, "-n", "-M", "prepared", "-c", str(PGBENCH_CLIENTS), "-j", "2",
             "-T", str(PGBENCH_S), "-f", str(path), libpq(url)],
            capture_output=True, text=True, timeout=PGBENCH_S + 60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
    for line in result.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    print(result.stdout[-1500:], result.stderr[-1500:])
    return None


def _one_line(sql: str) -> str:
    # pgbench ends a command at the end of a line unless the SQL continues: strip comments
    # and join lines.
    lines = [ln.split("--", 1)[0].rstrip() for ln in sql.splitlines()]
    return " ".join(ln.strip() for ln in lines if ln.strip())


def procrastinate_rate() -> float | None:
    try:
        import procrastinate
    except ImportError:
        return None
    with bench_database("procrastinate", schema=False) as url:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq(url)))

        @app.task(name="noop")
        async def noop(i: int) -> None:
            return None

        async def go() -> float:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                await noop.batch_defer_async(*({"i": i} for i in range(PROCRASTINATE_JOBS)))
                started = time.monotonic()
                await app.run_worker_async(concurrency=CONCURRENCY, wait=False,
                                           install_signal_handlers=False)
                return PROCRASTINATE_JOBS / (time.monotonic() - started)

        return asyncio.run(go())


def run() -> list[Figure]:
    e2e, cpu_per_task_s = end_to_end()
    e2e_two, _ = end_to_end(processes=2)
    if cpu_per_task_s is not None:
        MEASURED["worker_cpu_s_per_task"] = cpu_per_task_s
    ceiling = pgbench_ceiling()
    procrastinate_tps = procrastinate_rate()
    figs = [
        figure("end-to-end tasks/s (dispatch->HTTP->claim->store->complete)", e2e, "tasks/s",
               goal=f">= {GOAL_TASKS_PER_S:.0f}", check=lambda v: v >= GOAL_TASKS_PER_S,
               note=f"{N_TASKS} tasks, C={CONCURRENCY}, 1 worker process; {load_note()}"),
        figure("end-to-end tasks/s, 2 worker processes (one per core)", e2e_two, "tasks/s",
               goal=f">= {GOAL_TASKS_PER_S:.0f}", check=lambda v: v >= GOAL_TASKS_PER_S,
               note=f"C={CONCURRENCY // 2} each, same database"),
        figure("PostgreSQL ceiling, same statements (pgbench)", ceiling, "tasks/s",
               note=f"{PGBENCH_CLIENTS} clients, {PGBENCH_S} s, 3 transactions per task"),
        figure("procrastinate no-op jobs/s, same server", procrastinate_tps, "jobs/s",
               note=f"{PROCRASTINATE_JOBS} jobs, concurrency {CONCURRENCY}"),
        figure("end to end (best of 1 or 2 processes) vs procrastinate",
               (max(e2e or 0, e2e_two or 0) / procrastinate_tps)
               if (e2e or e2e_two) and procrastinate_tps else None, "x",
               goal=">= 1 (not behind)", check=lambda v: v >= 1.0),
        figure("worker CPU per task", cpu_per_task_s * 1000 if cpu_per_task_s else None,
               "ms", goal=f"<= {GOAL_CPU_MS_PER_TASK:g}",
               check=lambda v: v <= GOAL_CPU_MS_PER_TASK,
               note="user+system CPU of the worker process / tasks, 1 worker process"),
        figure("PostgreSQL transactions per task (end to end)",
               MEASURED.get("pg_xacts_per_task_1"), "",
               note=f"1 worker process; {MEASURED.get('pg_xacts_per_task_2', 0):.2f} with 2; "
                    "each autocommit statement is one, group statements carry many tasks"),
        figure("PostgreSQL backend CPU per task (end to end)",
               _ms(MEASURED.get("pg_cpu_s_per_task_1")), "ms",
               note=f"embedded server, 1 worker process; "
                    f"{_ms(MEASURED.get('pg_cpu_s_per_task_2')) or 0:.2f} ms with 2"),
    ]
    return figs


if __name__ == "__main__":
    run()
