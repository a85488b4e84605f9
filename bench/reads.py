"""Benchmark 5, reads at scale: 1,000,000 task rows over 1,000 jobs (one of 10,000 tasks,
10 % failed), generated in SQL. Job status p99 and a failures page over the HTTP API, the
dashboard's job page under AppTest, EXPLAIN ANALYZE of the hot reads (index use), and 100
concurrent completions on one job's counter row vs spread over 100 jobs.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import (
    REPO_ROOT,
    Figure,
    base_env,
    bench_database,
    figure,
    load_note,
    running_worker,
    sync_engine,
    workdir,
)

N_TASKS = 1_000_000
N_JOBS = 1000
BIG_JOB_TASKS = 10_000
STATUS_REQUESTS = 400
PAGE_REQUESTS = 60
COMPLETIONS = 100
COMPLETION_CONNECTIONS = 40  # the server is shared: do not take every connection slot
THUMB_KEY = "bench/thumb.webp"

# Job i's id is md5(i) as a uuid; job 0 is the 10,000-task job.
GENERATE = [
    "SET LOCAL synchronous_commit = off",
    f"""INSERT INTO generation_jobs (id, status, total_tasks, style, count_per_prompt,
           provider, model, size, quality, created_at, started_at, finished_at)
        SELECT md5(j::text)::uuid, 'completed_with_errors',
               CASE WHEN j = 0 THEN {BIG_JOB_TASKS}
                    ELSE ({N_TASKS} - {BIG_JOB_TASKS}) / ({N_JOBS} - 1)
                         + CASE WHEN j <= ({N_TASKS} - {BIG_JOB_TASKS}) % ({N_JOBS} - 1)
                                THEN 1 ELSE 0 END END,
               'none', 1, 'demo', 'demo', '1024x1024', 'low',
               now() - make_interval(mins => j), now() - make_interval(mins => j),
               now() - make_interval(mins => j) + interval '30 seconds'
          FROM generate_series(0, {N_JOBS - 1}) j""",
    f"""INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, style,
           status, attempts, last_error_code, last_error, image_path, thumbnail_path,
           latency_ms, created_at, updated_at, started_at, finished_at)
        SELECT gen_random_uuid(), md5(jb::text)::uuid, g, 0,
               'a lighthouse at dusk, variation ' || g, 'none',
               CASE WHEN g % 10 = 3 THEN 'failed' ELSE 'succeeded' END,
               CASE WHEN g % 10 = 3 THEN 5 ELSE 1 END,
               CASE WHEN g % 10 = 3 THEN (CASE WHEN g % 20 = 3 THEN 'moderation_blocked'
                                              ELSE 'rate_limit_exceeded' END) END,
               CASE WHEN g % 10 = 3 THEN 'refused by the bench' END,
               CASE WHEN g % 10 = 3 THEN NULL ELSE '{THUMB_KEY}' END,
               CASE WHEN g % 10 = 3 THEN NULL ELSE '{THUMB_KEY}' END,
               1000 + g % 500, now(), now(), now(), now() - make_interval(secs => g % 3600)
          FROM generate_series(0, {N_TASKS - 1}) g,
               LATERAL (SELECT CASE WHEN g < {BIG_JOB_TASKS} THEN 0
                               ELSE 1 + (g - {BIG_JOB_TASKS}) % ({N_JOBS} - 1) END AS jb) x""",
    """UPDATE generation_jobs j
          SET completed_tasks = c.ok, failed_tasks = c.bad
         FROM (SELECT job_id, count(*) FILTER (WHERE status = 'succeeded') AS ok,
                      count(*) FILTER (WHERE status = 'failed') AS bad
                 FROM generation_tasks GROUP BY job_id) c
        WHERE j.id = c.job_id""",
]


def _job_id(i: int) -> str:
    import hashlib
    import uuid

    return str(uuid.UUID(hashlib.md5(str(i).encode()).hexdigest()))


def generate(engine: Engine, statements: list[str] | None = None) -> float:
    """Fill the tables fast: bulk insert without the task table's indexes and keys, then
    build them once (what a restore does), then ANALYZE."""
    started = time.monotonic()
    with engine.begin() as conn:
        keys = conn.execute(text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'generation_tasks'::regclass AND contype IN ('p', 'u', 'f')"
            " ORDER BY contype = 'f'")).all()
        indexes = conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'generation_tasks' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'generation_tasks'::regclass)")).all()
        for name, _ in reversed(keys):
            conn.execute(text(f'ALTER TABLE generation_tasks DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        for statement in statements or GENERATE:
            conn.execute(text(statement))
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        for name, definition in keys:
            conn.execute(text(f'ALTER TABLE generation_tasks ADD CONSTRAINT "{name}" '
                              f"{definition}"))
        for _, definition in indexes:
            conn.execute(text(definition))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE generation_tasks"))
        conn.execute(text("VACUUM ANALYZE generation_jobs"))
    return time.monotonic() - started


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def http_reads(worker_url: str) -> tuple[list[float], list[float]]:
    rng = random.Random(6)
    status_ms: list[float] = []
    page_ms: list[float] = []
    big = _job_id(0)
    with httpx.Client(base_url=worker_url, timeout=10) as client:
        for _ in range(20):  # warm the connection, the pool and prepared statements
            client.get(f"/api/admin/jobs/{_job_id(rng.randrange(N_JOBS))}/status")
            client.get(f"/api/admin/jobs/{big}/tasks", params={"status": "failed"})
        for _ in range(STATUS_REQUESTS):
            started = time.perf_counter()
            r = client.get(f"/api/admin/jobs/{_job_id(rng.randrange(N_JOBS))}/status")
            status_ms.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
        for i in range(PAGE_REQUESTS):
            started = time.perf_counter()
            r = client.get(f"/api/admin/jobs/{big}/tasks", params={
                "status": "failed", "limit": 100, "offset": (i % 10) * 100})
            page_ms.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            assert r.json()["total"] == BIG_JOB_TASKS // 10
    return status_ms, page_ms


def core_status(engine: Engine) -> list[float]:
    """core.jobs.views.get_job, what the status route calls, without HTTP: the database's share."""
    from uuid import UUID

    from core.jobs import views

    rng = random.Random(7)
    for _ in range(20):
        views.get_job(UUID(_job_id(rng.randrange(N_JOBS))), engine=engine)
    samples = []
    for _ in range(STATUS_REQUESTS):
        job_id = UUID(_job_id(rng.randrange(N_JOBS)))
        started = time.perf_counter()
        views.get_job(job_id, engine=engine)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def dashboard_job_page(url: str, images_dir: Path) -> float | None:
    """Seconds for one AppTest run of the job page on the 10,000-task job (after a warm-up
    run, so imports and Streamlit's script compile are not counted)."""
    if not (REPO_ROOT / "dashboard" / "app.py").exists():
        return None
    from streamlit.testing.v1 import AppTest

    from core import db
    from core.config import get_settings

    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "LOCAL_STORAGE_DIR",
                                            "ENVIRONMENT", "STORAGE_BACKEND")}
    os.environ.update(DATABASE_URL=url, LOCAL_STORAGE_DIR=str(images_dir),
                      ENVIRONMENT="test", STORAGE_BACKEND="local")
    get_settings.cache_clear()
    db.reset_engines()
    try:
        at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60)
        at.run()
        at.switch_page("app_pages/job.py")
        at.query_params.update(job_id=_job_id(0))
        at.run()  # warm-up
        if at.exception:
            print("dashboard job page raised:", [e.value for e in at.exception][:1])
            return None
        started = time.perf_counter()
        at.run()
        return time.perf_counter() - started
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        db.reset_engines()


# The claim token of the completion bench's rows (complete_task is token-guarded).
BENCH_TOKEN = uuid.UUID("00000000-0000-0000-0000-0000000000a0")

EXPLAINED: dict[str, tuple[str, dict[str, Any]]] = {
    "job_by_id": ("job_by_id", {"job_id": "JOB"}),
    "failures page": ("list_tasks", {"job_id": "BIG", "status": "failed",
                                     "error_code": None, "limit": 100, "offset": 900}),
    "failures count": ("count_tasks", {"job_id": "BIG", "status": "failed",
                                       "error_code": None}),
    "task counts": ("task_counts_by_status", {"job_id": "BIG"}),
    "dispatch claim": ("dispatch_claim_due", {"limit": 10, "visibility_s": 30,
                                              "starvation_s": 30,
                                              "queue_name": "image-generation",
                                              "owner": "bench:1",
                                              "boot": "00000000-0000-0000-0000-0000000000b0"}),
}


def explain(engine: Engine) -> dict[str, str]:
    """Plan summary per hot read; a Seq Scan over generation_tasks would be a finding."""
    from core.db.queries import sql

    plans: dict[str, str] = {}
    with engine.connect() as conn:
        for label, (name, params) in EXPLAINED.items():
            bound = {k: (_job_id(0) if v == "BIG" else _job_id(7) if v == "JOB" else v)
                     for k, v in params.items()}
            tx = conn.begin()
            rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql(name)),
                                bound).scalars().all()
            tx.rollback()  # the claim is an UPDATE: measure it, keep nothing
            plan = "\n".join(rows)
            # "Index Scan using generation_jobs_pkey on generation_jobs", etc.
            uses = [ln.strip().lstrip("-> ").split(" (actual")[0]
                    for ln in rows if "Scan" in ln and "(actual" in ln]
            exec_ms = next((ln.split(":")[1].strip() for ln in rows
                            if ln.startswith("Execution Time")), "?")
            plans[label] = f"{'; '.join(uses)} ({exec_ms})"
            plans[label + ".full"] = plan
    return plans


async def _completions(url: str, *, jobs: int) -> tuple[float, int]:
    """100 running tasks completed concurrently; their job counter rows: one or ``jobs``."""
    from core.delivery import statements

    engine = create_async_engine(url, pool_size=COMPLETION_CONNECTIONS, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE generation_tasks, generation_jobs CASCADE"))
            await conn.execute(text(
                "INSERT INTO generation_jobs (id, status, total_tasks, style, "
                "count_per_prompt, provider, model, size, quality) SELECT md5(j::text)::uuid,"
                f" 'running', {COMPLETIONS}, 'none', 1, 'demo', 'demo', '1024x1024', 'low' "
                f"FROM generate_series(0, {jobs - 1}) j"))
            ids = (await conn.execute(text(
                "INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, "
                "style, status, attempts, lease_until, claim_token) SELECT "
                f"gen_random_uuid(), md5((g % {jobs})::text)::uuid, g, 0, 'p', 'none', "
                f"'running', 1, now() + interval '5 minutes', '{BENCH_TOKEN}' "
                f"FROM generate_series(0, {COMPLETIONS - 1}) g "
                "RETURNING id"))).scalars().all()
        # Warm the pool so connection set-up is not what we time.
        async def ping() -> None:
            async with engine.connect() as c:
                await c.execute(text("SELECT 1"))
        await asyncio.gather(*(ping() for _ in range(COMPLETION_CONNECTIONS)))
        async def one(task_id: Any) -> None:
            # The worker's own completion step (core.delivery.statements.complete).
            task = statements.ClaimedTask(id=task_id, job_id=task_id, prompt="p", style="none",
                                        attempt=1, prompt_index=0, image_index=0,
                                        provider="demo", model="demo", size="1024x1024",
                                        quality="low", token=BENCH_TOKEN)
            assert await statements.complete(engine, task, image_path="a", thumbnail_path="b",
                                           latency_ms=1)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in ids))
        elapsed = time.perf_counter() - started
        async with engine.connect() as conn:
            counted = (await conn.execute(text(
                "SELECT sum(completed_tasks) FROM generation_jobs"))).scalar()
        return elapsed, int(counted or 0)
    finally:
        await engine.dispose()


def run() -> list[Figure]:
    with bench_database("reads") as url, workdir("reads") as tmp:
        engine = sync_engine(url)
        try:
            gen_s = generate(engine)
            images = tmp / "images"
            (images / "bench").mkdir(parents=True)
            from core.storage import make_thumbnail
            from testing.png import png_bytes

            (images / THUMB_KEY).write_bytes(make_thumbnail(png_bytes(64)))
            env = {**base_env(url, tmp), "RUN_DISPATCHER": "false"}
            with running_worker(env, tmp / "worker.log") as worker:
                status_ms, page_ms = http_reads(worker.url)
            core_status_ms = core_status(engine)
            plans = explain(engine)
            page_s = dashboard_job_page(url, images)
            one_job = asyncio.run(_completions(url, jobs=1))
            spread = asyncio.run(_completions(url, jobs=COMPLETIONS))
        finally:
            engine.dispose()
    seq_scans = [k for k, v in plans.items() if not k.endswith(".full")
                 and "Seq Scan on generation_tasks" in v]
    figs = [
        figure("job status over HTTP, p99 (1M tasks, 1,000 jobs)", _p(status_ms, 0.99), "ms",
               goal="< 10 ms", check=lambda v: v < 10,
               note=f"p50 {statistics.median(status_ms):.1f} ms, {STATUS_REQUESTS} requests; "
                    f"data generated in {gen_s:.0f} s; {load_note()}"),
        figure("job status in core (core.jobs.views.get_job, no HTTP), p99",
               _p(core_status_ms, 0.99),
               "ms", note=f"p50 {statistics.median(core_status_ms):.2f} ms"),
        figure("failures page of the 10,000-task job over HTTP, p99", _p(page_ms, 0.99), "ms",
               goal="< 50 ms", check=lambda v: v < 50,
               note=f"p50 {statistics.median(page_ms):.1f} ms; 100 rows + total"),
        figure("dashboard job page (AppTest run, 10,000-task job)", page_s, "s",
               goal="< 1 s", check=lambda v: v < 1.0,
               note="" if page_s is not None else "dashboard/ missing or the page raised"),
        figure("hot reads planned with a Seq Scan on generation_tasks", float(len(seq_scans)),
               "queries", goal="0", check=lambda v: v == 0,
               note="; ".join(f"{k}: {v}" for k, v in plans.items() if not k.endswith(".full"))),
        figure("100 concurrent completions, one job's counter row", one_job[0] * 1000, "ms",
               note=f"counter {one_job[1]}/100; {COMPLETION_CONNECTIONS} connections"),
        figure("100 concurrent completions, 100 jobs' rows", spread[0] * 1000, "ms",
               note=f"counter {spread[1]}/100"),
        figure("hot-row cost: one job / spread", one_job[0] / spread[0], "x",
               goal="<= 1.5 and counters exact",
               check=lambda v: v <= 1.5 and one_job[1] == spread[1] == COMPLETIONS),
    ]
    EXPLAIN_TEXT.update({k[:-5]: v for k, v in plans.items() if k.endswith(".full")})
    return figs


EXPLAIN_TEXT: dict[str, str] = {}

if __name__ == "__main__":
    run()
    for name, plan in EXPLAIN_TEXT.items():
        print(f"--- {name}\n{plan}")
