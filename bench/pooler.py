"""What turning prepared statements off costs on the hot path (Supabase's transaction pooler).

Supabase's transaction pooler (pgbouncer in transaction mode, port 6543) needs psycopg's
``prepare_threshold=None``: every statement is then parsed and planned by the server each
time. Measured here on the statements every delivery runs: the worker's claim
(claim_task) and the completion with its job counter (complete_task), each its own
autocommit statement as in the real path, one connection, N tasks, direct to PostgreSQL
with prepared statements on (psycopg's default: prepared from the 5th use) and off, and
through a real pgbouncer in transaction mode (off), when pgbouncer is installed.
"""

from __future__ import annotations

import statistics
import time
import uuid

from sqlalchemy import create_engine, text

from bench.common import Figure, bench_database, figure, load_note
from core.db.queries import q

N_TASKS = 1000
# On and off alternate, ROUNDS times each, and the median is reported: on a shared
# machine the load moves more between two runs than the setting does.
ROUNDS = 3


def _seed(url: str, n: int) -> list[uuid.UUID]:
    engine = create_engine(url)
    job_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(n)]
    with engine.begin() as conn:
        # Only the columns a job needs; the rest (mode, options, name, priority, cap) keep
        # their server defaults, so later schema versions do not break this bench.
        conn.execute(text(
            "INSERT INTO generation_jobs (id, status, total_tasks, style, count_per_prompt, "
            "provider, model, size, quality, estimated_cost_usd) VALUES (:id, 'pending', "
            ":total_tasks, 'none', 1, 'demo', 'demo', '1024x1024', 'low', 0)"),
            {"id": job_id, "total_tasks": n})
        conn.execute(text(
            "INSERT INTO generation_tasks (id, job_id, prompt_index, prompt, style, status) "
            "SELECT id, :job, ord, 'p', 'none', 'queued' "
            "FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS t(id, ord)"),
            {"job": job_id, "ids": ids})
    engine.dispose()
    return ids


def _hot_path_us(url: str, prepare: int | None, n: int) -> float:
    """Microseconds per task for claim + complete on one autocommit connection."""
    ids = _seed(url, n)
    engine = create_engine(url, connect_args={"prepare_threshold": prepare},
                           isolation_level="AUTOCOMMIT", pool_size=1)
    with engine.connect() as conn:
        started = time.perf_counter()
        boot = uuid.uuid4()
        for task_id in ids:
            token = uuid.uuid4()  # each claim draws one; complete presents it (leases.py)
            conn.execute(q("claim_task"), {
                "task_id": task_id, "attempt_floor": 0, "lease_s": 60, "owner": "bench",
                "boot": boot, "token": token, "max_attempts": 5}).one()
            conn.execute(q("complete_task"), {
                "task_id": task_id, "token": token, "image_path": "x.png",
                "thumbnail_path": "x.webp", "latency_ms": 1, "input_tokens": None,
                "output_tokens": None}).all()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed / n * 1e6


def run() -> list[Figure]:
    figures = []
    with bench_database("pooler") as url:
        _hot_path_us(url, 5, 200)  # warm the server's caches
        ons, offs = [], []
        for _ in range(ROUNDS):
            ons.append(_hot_path_us(url, 5, N_TASKS))
            offs.append(_hot_path_us(url, None, N_TASKS))
        on, off = statistics.median(ons), statistics.median(offs)
        figures.append(figure("hot path (claim + complete), prepared statements on", on,
                              "us/task", note=f"direct, median of {ROUNDS} x {N_TASKS} tasks, "
                              f"{load_note()}"))
        figures.append(figure("hot path (claim + complete), prepared statements off", off,
                              "us/task", note="direct, as DB_POOLER=transaction runs"))
        figures.append(figure("cost of prepared statements off", (off - on) / on * 100,
                              "% per task", note="on the two hot statements; the model "
                              "call (seconds) dwarfs it"))
        try:
            from testing import pgbouncer
        except ImportError:  # benchmarks run from a checkout; tests/ may be absent
            pgbouncer = None  # type: ignore[assignment]
        if pgbouncer is not None and pgbouncer.binary():
            with pgbouncer.PgBouncer(url, pool_mode="transaction") as bouncer:
                from sqlalchemy.engine import make_url

                through = _hot_path_us(bouncer.url(str(make_url(url).database)), None,
                                       N_TASKS)
            figures.append(figure("hot path through pgbouncer (transaction mode, off)",
                                  through, "us/task", note="one extra loopback hop"))
    return figures
