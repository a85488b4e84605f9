"""The admin API's shapes and the standalone dispatcher process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tests.conftest import REPO_ROOT, WorkerProcess, wait_for
from tests.integration.test_end_to_end import assert_counters_match_rows
from tests.support.worker_api import job_status, submit, wait_done


def test_job_list_tasks_cancel_and_retry_endpoints(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    worker = start_worker(MAX_ATTEMPTS="1")
    job = submit(worker, ["ok one", "bad [[demo:invalid_request]]"], count_per_prompt=2)
    wait_done(worker, job["id"])
    listed = httpx.get(worker.url + "/api/admin/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert listed[0]["status"] == "completed_with_errors"
    failed = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks",
                       params={"status": "failed"}).json()
    assert failed["total"] == 2
    assert {t["last_error_code"] for t in failed["tasks"]} == {"invalid_request"}
    retried = httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/retry-failed",
                         json={"task_ids": [failed["tasks"][0]["id"]],
                               "include_refusals": True}).json()
    assert (retried["requeued"], retried["status"]) == (1, "running")
    wait_for(lambda: job_status(worker, job["id"])["progress_percentage"] == 100.0, timeout_s=30)
    assert job_status(worker, job["id"])["failed_tasks"] == 2  # the same refusal again
    done_cancel = httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/cancel")
    assert done_cancel.status_code == 409
    missing = httpx.get(f"{worker.url}/api/admin/jobs/{uuid.uuid4()}/status")
    assert missing.status_code == 404
    bad_status = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks",
                           params={"status": "exploded"})
    assert bad_status.status_code == 422 and bad_status.json()["field"] == "status"
    assert_counters_match_rows(engine, job["id"])


def test_standalone_dispatcher_can_be_killed_and_restarted(
    start_worker: Callable[..., WorkerProcess], env: dict[str, str], engine: Engine,
    tmp_path: Path,
) -> None:
    worker = start_worker(RUN_DISPATCHER="false", DEMO_LATENCY_MS="100")
    dispatcher_env = {**os.environ, **env, "WORKER_URL": worker.url,
                      "DISPATCH_DEADLINE_S": "2", "TASK_LEASE_S": "3"}

    def start_dispatcher() -> subprocess.Popen[bytes]:
        with (tmp_path / "dispatcher.log").open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "worker.dispatcher"], cwd=REPO_ROOT,
                                    env=dispatcher_env, stdout=log, stderr=subprocess.STDOUT)

    job = submit(worker, [f"p{i}" for i in range(40)])
    first = start_dispatcher()
    try:
        wait_for(lambda: job_status(worker, job["id"])["completed_tasks"] >= 5, timeout_s=30)
        first.kill()
        first.wait()
        stalled = job_status(worker, job["id"])["completed_tasks"]
        assert stalled < 40
        second = start_dispatcher()
        try:
            done = wait_done(worker, job["id"], timeout_s=60)
        finally:
            second.terminate()
            assert second.wait(timeout=15) == 0  # SIGTERM is a clean stop
    finally:
        if first.poll() is None:
            first.kill()
    assert (done["status"], done["completed_tasks"]) == ("completed", 40)
    assert assert_counters_match_rows(engine, job["id"]) == {"succeeded": 40}
