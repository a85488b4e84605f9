"""Cloud Tasks mode through tests/peers/cloudtasks_fake.py with WORKER_URL as the
deployment guide writes it (the full task URL): the task target is not doubled, the OIDC
audience the enqueuer asks for is the one the worker's verifier accepts, and a batch
completes. A wrong WORKER_URL (404 from every try) no longer loops: the stranded sweep
counts each hand-over the queue dropped and the task fails as `undeliverable`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from core.cli import main as cli
from core.config import Settings, get_settings
from core.dispatch.cloud_tasks import CloudTasksDispatcher
from core.sweeper import sweep_stranded
from tests.conftest import WorkerProcess, free_port, wait_for
from tests.peers.cloudtasks_fake import CloudTasksFake, TestIdentity, production_worker_env

ADMIN = {"X-API-Key": "test-admin-key-0123456789"}
TASK_PATH = "/api/admin/worker/process-task"


@pytest.fixture
def identity() -> Iterator[TestIdentity]:
    key = TestIdentity()
    yield key
    key.stop()


@pytest.fixture
def fake(identity: TestIdentity) -> Iterator[CloudTasksFake]:
    with CloudTasksFake(identity) as server:
        yield server


def _start(env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity,
           tmp_path: Path, *, path: str, **extra: str) -> WorkerProcess:
    port = free_port()
    env.update(production_worker_env(port=port, tasks_host=fake.host,
                                     certs_url=identity.serve()))
    env.update({"PORT": str(port), "WORKER_URL": f"http://127.0.0.1:{port}{path}", **extra})
    return WorkerProcess(env=dict(env), port=port, log_path=tmp_path / "worker.log")


def _submit(worker: WorkerProcess, n: int) -> str:
    response = httpx.post(worker.url + "/api/admin/generate/batch", headers=ADMIN,
                          timeout=30, json={"prompts": [f"a kite {i}" for i in range(n)],
                                            "style": "none", "count_per_prompt": 1})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _job(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, failed_tasks, total_tasks FROM "
                                 "generation_jobs WHERE id = :j"), {"j": job_id}).one()


def test_the_guides_full_task_url_completes_through_cloud_tasks(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _start(env, fake, identity, tmp_path, path=TASK_PATH)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    assert cli(["queue", "create"]) == 0
    worker.start()
    try:
        job_id = _submit(worker, 6)
        from core import db

        engine = db.get_engine(env["DATABASE_URL"])
        wait_for(lambda: _job(engine, job_id).status == "completed", timeout_s=60,
                 message="the batch")
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(text(
                "SELECT cloud_task_name FROM generation_tasks WHERE job_id = :j"),
                {"j": job_id})]
        for name in names:
            (delivery,) = fake.deliveries_for(name)
            assert delivery.status == 200  # the OIDC token verified on the worker
            assert delivery.url == worker.url + TASK_PATH  # not doubled
    finally:
        worker.stop()
        get_settings.cache_clear()


def test_a_wrong_worker_url_ends_as_undeliverable_in_cloud_tasks_mode(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # MAX_ATTEMPTS=1: the queue tries 1 + headroom 2 times, quickly, then drops the task.
    worker = _start(env, fake, identity, tmp_path, path="/v2", MAX_ATTEMPTS="1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    assert cli(["queue", "create"]) == 0
    worker.start()
    dispatcher = CloudTasksDispatcher.from_settings(get_settings())
    try:
        from core import db

        engine = db.get_engine(env["DATABASE_URL"])
        job_id = _submit(worker, 2)

        def dropped_then_swept() -> bool:
            sweep_stranded(dispatcher, stale_s=0.0)
            return _job(engine, job_id).status == "failed"

        wait_for(dropped_then_swept, timeout_s=60, interval_s=0.5,
                 message="the queue to drop the tasks and the sweep to end them")
        with engine.connect() as conn:
            rows = list(conn.execute(text(
                "SELECT status, last_error_code, last_error, undeliverable_tries FROM "
                "generation_tasks WHERE job_id = :j"), {"j": job_id}))
        for row in rows:
            assert (row.status, row.last_error_code) == ("failed", "undeliverable")
            assert worker.url + "/v2" + TASK_PATH in row.last_error
        assert all(d.status == 404 for d in fake.deliveries)
        health = httpx.get(worker.url + "/healthz", timeout=5).json()
        assert health["status"] == "degraded"
        assert any("Cloud Tasks gave up" in r for r in health["reasons"])
    finally:
        dispatcher.close()
        worker.stop()
        get_settings.cache_clear()


def test_refused_cloud_tasks_deliveries_show_on_healthz_within_seconds(
        env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker trusts another signing key than the one the queue's tokens carry: every
    # delivery is answered 401, as with a mismatched OIDC setup in production.
    other = TestIdentity()
    try:
        worker = _start(env, fake, identity, tmp_path, path="",
                        OIDC_CERTS_URL=other.serve())
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        assert cli(["queue", "create"]) == 0
        worker.start()
        try:
            _submit(worker, 1)

            def reasons() -> list[str]:
                body = httpx.get(worker.url + "/healthz", timeout=5).json()
                return [r for r in body["reasons"] if "refused Cloud Tasks deliveries" in r]

            found = wait_for(reasons, timeout_s=10, interval_s=0.2,
                             message="/healthz to show the refused deliveries")
            assert "HTTP 401" in found[0] and worker.url + TASK_PATH in found[0]
            metrics = httpx.get(worker.url + "/metrics", timeout=5).text
            assert 'aiwebimage_undeliverable_recent{cause="refused_401"}' in metrics
        finally:
            worker.stop()
            get_settings.cache_clear()
    finally:
        other.stop()
