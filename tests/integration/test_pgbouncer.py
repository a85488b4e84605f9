"""Supabase's poolers, against a real pgbouncer (testing/pgbouncer.py) in front of the
test PostgreSQL: in transaction mode (Supabase's 6543) a 300-task batch completes exactly
once with prepared statements off; in session mode (Supabase's session pooler) prepared
statements stay on. DATABASE_URL is given in psql's ``postgresql://`` form."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text

from testing import pgbouncer
from testing.pgbouncer import PgBouncer
from tests.conftest import WorkerProcess, need, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _installed() -> None:
    need(pgbouncer.binary() is not None,
         "pgbouncer not installed (scripts/test-deps.d/40-pgbouncer.sh)")


def _psql_form(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _database(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(db_url).database)


def test_the_bug_prepared_statements_break_in_transaction_mode(
        server_url: str, db_url: str) -> None:
    """The failure Supabase's transaction pooler gave, reproduced: psycopg preparing
    statements through a transaction-mode pgbouncer fails once clients share server
    connections."""
    errors: list[str] = []
    with PgBouncer(server_url, pool_mode="transaction", pool_size=2) as bouncer:
        url = _psql_form(bouncer.url(_database(db_url)))

        def work(prepare: int | None) -> None:
            try:
                with psycopg.connect(url, prepare_threshold=prepare, autocommit=True) as c:
                    for i in range(100):
                        c.execute("SELECT %s::int", (i,))
            except psycopg.Error as exc:
                errors.append(type(exc).__name__)

        threads = [threading.Thread(target=work, args=(0,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors and set(errors) <= {"DuplicatePreparedStatement",
                                          "InvalidSqlStatementName"}, errors
        errors.clear()
        threads = [threading.Thread(target=work, args=(None,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def _run_batch(worker: WorkerProcess, n: int) -> str:
    response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=60, json={
        "prompts": [f"a paper boat {i}" for i in range(n)], "style": "none",
        "count_per_prompt": 1})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _finished(engine: Engine, job_id: str) -> bool:
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM generation_jobs WHERE id = :j"),
                              {"j": job_id}).scalar()
    return status in ("completed", "completed_with_errors", "failed")


def _assert_exactly_once(engine: Engine, job_id: str, n: int, images: Path) -> None:
    with engine.connect() as conn:
        job = conn.execute(text("SELECT status, completed_tasks, failed_tasks FROM "
                                "generation_jobs WHERE id = :j"), {"j": job_id}).one()
        rows = conn.execute(text("SELECT status, attempts, count(*) AS n FROM "
                                 "generation_tasks WHERE job_id = :j GROUP BY 1, 2"),
                            {"j": job_id}).all()
    assert (job.status, job.completed_tasks, job.failed_tasks) == ("completed", n, 0)
    # Every task succeeded on its first attempt: no attempt lost to a broken statement.
    assert [(r.status, r.attempts, r.n) for r in rows] == [("succeeded", 1, n)]
    full = [p for p in images.rglob("*") if p.is_file() and "thumb" not in p.name]
    assert len(full) >= n


@pytest.mark.parametrize(("pool_mode", "setting", "expect"), [
    ("transaction", "transaction", "transaction"),
    ("session", "auto", "direct"),
])
def test_a_batch_through_pgbouncer_completes_exactly_once(
        pool_mode: str, setting: str, expect: str, server_url: str, db_url: str,
        env: dict[str, str], engine: Engine, tmp_path: Path) -> None:
    n = 300 if pool_mode == "transaction" else 40
    # Session mode pins one server connection per client connection, as Supabase's
    # session pooler does: give it room for the worker's pools.
    pool_size = 4 if pool_mode == "transaction" else 40
    with PgBouncer(server_url, pool_mode=pool_mode, pool_size=pool_size) as bouncer:
        values = {**env, "DATABASE_URL": _psql_form(bouncer.url(_database(db_url))),
                  "DB_POOLER": setting, "DB_POOL_SIZE": "4", "LOCAL_MAX_CONCURRENCY": "16"}
        worker = WorkerProcess(env=values, log_path=tmp_path / "worker.log")
        worker.start()
        try:
            job_id = _run_batch(worker, n)
            wait_for(lambda: _finished(engine, job_id), timeout_s=240, interval_s=0.5,
                     message=f"{n} tasks through pgbouncer")
        finally:
            worker.stop()
        logs = worker.logs()
    assert f"database connection mode: {expect}" in logs
    for bad in ("DuplicatePreparedStatement", "InvalidSqlStatementName"):
        assert bad not in logs
    _assert_exactly_once(engine, job_id, n, Path(env["LOCAL_STORAGE_DIR"]))
