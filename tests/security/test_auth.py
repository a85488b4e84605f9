"""Admin API key, the task endpoint's shared secret, production start-up refusal, CORS."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO_ROOT, WorkerProcess
from tests.security import API_KEY, TASK_SECRET

TASK = "/api/admin/worker/process-task"
# A task endpoint too: tests/security/test_batch_poll_auth.py.
BATCH_POLL = "/api/admin/worker/batch-poll"


def _admin_operations(worker: WorkerProcess) -> list[tuple[str, str]]:
    """Every admin operation the worker publishes, with path parameters filled in."""
    spec = httpx.get(worker.url + "/openapi.json", timeout=10).json()
    found = []
    for path, methods in spec["paths"].items():
        if not path.startswith("/api/admin") or path in (TASK, BATCH_POLL):
            continue
        for method in methods:
            found.append((method.upper(), path.replace("{job_id}", str(uuid.uuid4()))
                          .replace("{task_id}", str(uuid.uuid4()))))
    return found


def _call(worker: WorkerProcess, method: str, path: str, headers: dict[str, str]) -> int:
    body: Any = {"prompts": ["a cat"]} if path.endswith("/generate/batch") else None
    if path.endswith("/resubmit"):
        body = {"prompt": "a cat"}
    if path.endswith("/schedule"):
        body = {"priority": "high"}
    r = httpx.request(method, worker.url + path, headers=headers, json=body, timeout=10)
    return r.status_code


def test_every_admin_endpoint_needs_the_api_key(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(API_KEY=API_KEY, TASK_SECRET=TASK_SECRET, RUN_DISPATCHER="false")
    operations = _admin_operations(worker)
    assert len(operations) >= 7  # batch, status, detail, jobs, tasks, retry, cancel
    refused = [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong"},
               {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": API_KEY + "x"},
               {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
               {"Authorization": f"Basic {API_KEY}"}, {"X-Task-Secret": TASK_SECRET}]
    for method, path in operations:
        for headers in refused:
            assert _call(worker, method, path, headers) == 401, (method, path, headers)
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            assert _call(worker, method, path, headers) in (200, 404, 409), (method, path)
    r = httpx.get(worker.url + "/api/admin/jobs", timeout=10)
    assert r.json() == {"detail": "missing or invalid API key"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert API_KEY not in r.text


def test_the_admin_key_alone_never_triggers_a_task_delivery(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(API_KEY=API_KEY, TASK_SECRET=TASK_SECRET, RUN_DISPATCHER="false")
    body = {"task_id": str(uuid.uuid4())}
    for headers in ({}, {"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"},
                    {"X-Task-Secret": API_KEY}, {"X-Task-Secret": "wrong"},
                    {"X-Task-Secret": ""}, {"X-Task-Secret": TASK_SECRET + "x"}):
        r = httpx.post(worker.url + TASK, json=body, headers=headers, timeout=10)
        assert r.status_code == 401, headers
    ok = httpx.post(worker.url + TASK, json=body, headers={"X-Task-Secret": TASK_SECRET},
                    timeout=10)
    assert (ok.status_code, ok.json()["outcome"]) == (200, "unknown_task")


def _run_worker(extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout: a developer's .env must not fill the gap.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {**keep, "PYTHONPATH": str(REPO_ROOT), **extra}
    return subprocess.run([sys.executable, "-m", "worker"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_production_without_api_key_refuses_to_start_and_names_it(tmp_path: Path) -> None:
    secrets = {"OPENAI_API_KEY": "sk-proj-Secret0penAIvalue123",
               "SUPABASE_KEY": "sb-secret-Supabase456value",
               "TASK_SECRET": TASK_SECRET, "DB_PASSWORD": "Pg-Secret-789pw"}
    base = {"ENVIRONMENT": "production", "OPENAI_API_KEY": secrets["OPENAI_API_KEY"],
            "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_KEY": secrets["SUPABASE_KEY"],
            "TASK_SECRET": TASK_SECRET, "PORT": "9",
            "DATABASE_URL": f"postgresql://app:{secrets['DB_PASSWORD']}@127.0.0.1:9/app"}
    for extra in ({}, {"API_KEY": ""}):
        done = _run_worker({**base, **extra}, tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == 2
        assert "Traceback" not in output
        assert "ENVIRONMENT=production refuses to start; missing: API_KEY" in output
        for value in secrets.values():
            assert value not in output


def test_cors_allows_only_the_configured_origins(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    good, evil = "http://dashboard.example:8501", "http://evil.example"
    worker = start_worker(API_KEY=API_KEY, CORS_ORIGINS=f"{good}, http://other.example",
                          RUN_DISPATCHER="false")
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "X-API-Key"}
    r = httpx.options(worker.url + "/api/admin/jobs", headers={"Origin": good, **preflight},
                      timeout=10)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == good
    r = httpx.options(worker.url + "/api/admin/jobs", headers={"Origin": evil, **preflight},
                      timeout=10)
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.get(worker.url + "/api/admin/jobs", timeout=10,
                  headers={"Origin": evil, "X-API-Key": API_KEY})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = httpx.get(worker.url + "/api/admin/jobs", timeout=10,
                  headers={"Origin": good, "X-API-Key": API_KEY})
    assert r.headers["access-control-allow-origin"] == good


def test_without_cors_origins_no_origin_is_allowed(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(RUN_DISPATCHER="false")
    r = httpx.get(worker.url + "/api/admin/jobs", headers={"Origin": "http://a.example"},
                  timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_in_production_the_admin_key_is_no_oidc_token(
    env: dict[str, str], tmp_path: Path,
) -> None:
    from testing.cloudtasks_fake import SERVICE_ACCOUNT, TestIdentity, production_worker_env
    from tests.conftest import free_port

    identity = TestIdentity()
    port = free_port()
    values = {**env, **production_worker_env(port=port, tasks_host="127.0.0.1:9",
                                             certs_url=identity.serve())}
    admin_key = values["API_KEY"]
    worker = WorkerProcess(env=values, port=port, log_path=tmp_path / "prod-worker.log")
    try:
        worker.start()
        body = {"task_id": str(uuid.uuid4())}
        for headers in ({"Authorization": f"Bearer {admin_key}"}, {"X-API-Key": admin_key},
                        {"X-API-Key": admin_key, "Authorization": f"Bearer {admin_key}"},
                        {"X-Task-Secret": admin_key}):
            r = httpx.post(worker.url + TASK, json=body, headers=headers, timeout=10)
            assert r.status_code == 401, headers
        # The same key does open the admin API, and a real token does deliver.
        jobs = httpx.get(worker.url + "/api/admin/jobs", headers={"X-API-Key": admin_key},
                         timeout=10)
        assert jobs.status_code == 200
        token = identity.token(audience=worker.url, email=SERVICE_ACCOUNT)
        r = httpx.post(worker.url + TASK, json=body, timeout=10,
                       headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["outcome"]) == (200, "unknown_task")
        assert admin_key not in worker.logs()
    finally:
        worker.stop()
        identity.stop()
