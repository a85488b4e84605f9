"""Fault 2: PostgreSQL stops and starts again mid-batch.

The shared test server is not touched (other tests use it): this test starts a private
PostgreSQL in a temporary folder with pgserver's binaries and stops/starts that one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from core import db
from core.db import embedded_pg
from tests.conftest import WorkerProcess, wait_for
from tests.reliability import (
    TASK,
    assert_counters_match_rows,
    assert_exactly_once,
    rows_by_status,
    submit,
    wait_finished,
)

OUTAGE_S = 3.0


@dataclass
class PrivatePostgres:
    server: Any
    url: str

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

        pg_ctl(args, pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def start(self) -> None:
        # The same socket folder as before, so the worker's DATABASE_URL stays valid.
        socket_dir = self.server.get_postmaster_info().socket_dir
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}",
                      "-l", str(self.server.log), "start"])


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    import pgserver  # type: ignore[import-untyped]

    # Not under pytest's tmp_path: any pytest run on the machine resets its root to 0700,
    # and the server runs as the 'pgserver' user, who must reach the data folder.
    folder = Path(tempfile.mkdtemp(prefix="aiwi-private-pg-"))
    folder.chmod(0o755)
    server = pgserver.get_server(str(folder / "pgdata"), cleanup_mode="stop")
    pg = PrivatePostgres(server, embedded_pg.to_sqlalchemy_url(server.get_uri()))
    try:
        yield pg
    finally:
        # pgserver's own cleanup only stops the postmaster it started, not a restarted one.
        if (Path(server.pgdata) / "postmaster.pid").exists():
            pg.stop()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_database_restart_mid_batch_answers_503_then_reconnects_and_completes(
    start_worker: Callable[..., WorkerProcess], private_pg: PrivatePostgres, tmp_path: Path
) -> None:  # tmp_path holds the images
    engine: Engine = create_engine(private_pg.url, pool_pre_ping=True)
    try:
        db.apply_schema(engine)
        _run(start_worker, private_pg, engine, tmp_path)
    finally:
        engine.dispose()


def _run(start_worker: Callable[..., WorkerProcess], pg: PrivatePostgres, engine: Engine,
         tmp_path: Path) -> None:
    worker = start_worker(DATABASE_URL=pg.url, DEMO_LATENCY_MS="40", DEMO_IMAGE_PX="32",
                          DISPATCH_DEADLINE_S="2", TASK_LEASE_S="3",
                          LOCAL_MAX_CONCURRENCY="5", MAX_ATTEMPTS="10")
    job_id = submit(worker, [f"outage picture {i}" for i in range(200)])["id"]
    wait_for(lambda: rows_by_status(engine, job_id).get("succeeded", 0) >= 40, timeout_s=30,
             interval_s=0.05, message="progress before the outage")
    with engine.connect() as conn:
        waiting = str(conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id=:j AND status='queued' LIMIT 1"),
            {"j": job_id}).scalar())
    engine.dispose()  # our own pool would hold dead connections too

    pg.stop()
    outage_started = time.monotonic()
    try:
        delivery = httpx.post(worker.url + TASK, json={"task_id": waiting}, timeout=15)
        status = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=15)
        health = httpx.get(worker.url + "/healthz", timeout=15)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
    finally:
        pg.start()

    # The queue is told to retry later, and so are the admin and health endpoints.
    assert delivery.status_code == 503, delivery.text
    assert int(delivery.headers["retry-after"]) >= 1
    assert status.status_code == 503 and status.json() == {"detail": "database unavailable"}
    assert health.status_code == 503

    rows = wait_finished(engine, job_id, timeout_s=60)
    assert rows == {"succeeded": 200}
    assert assert_counters_match_rows(engine, job_id) == {"succeeded": 200}
    assert_exactly_once(engine, tmp_path / "images", job_id)
    # The same process reconnected (pool pre-ping): it was never restarted.
    assert worker.proc is not None and worker.proc.poll() is None and worker.starts == 1
    after = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=15)
    assert after.status_code == 200 and after.json()["status"] == "completed"
    assert "db_unavailable" in worker.logs()
    print(f"FIGURES db_restart: faults=1 tasks=200 outage_s={OUTAGE_S} lost=0 duplicates=0")
