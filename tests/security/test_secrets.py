"""Secrets never appear in logs, error messages, answers or /metrics, even in a run full of
failures with debug logging on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tests.conftest import REPO_ROOT, WorkerProcess
from tests.reliability import TASK, wait_finished
from tests.security import API_KEY, TASK_SECRET

OPENAI_KEY = "sk-proj-NeverLogMe0penAI1234567890"
SUPABASE_KEY = "eyJhbGciOiJIUzI1NiJ9.NeverLogMeSupabase.sig"
DB_PASSWORD = "Pg-NeverLogMe-Passw0rd"


def _with_password(db_url: str) -> tuple[str, str]:
    """The test database's URL with a password in it (the test server trusts local
    connections, so any password works); an existing password is kept and checked."""
    url = make_url(db_url)
    if url.password:
        return db_url, str(url.password)
    return url.set(password=DB_PASSWORD).render_as_string(hide_password=False), DB_PASSWORD


def _assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked into {where}"


def test_a_failing_run_never_shows_a_secret(
    start_worker: Callable[..., WorkerProcess], engine: Engine, db_url: str, tmp_path: Path
) -> None:
    database_url, password = _with_password(db_url)
    secrets = [OPENAI_KEY, SUPABASE_KEY, API_KEY, TASK_SECRET, password]
    worker = start_worker(
        DATABASE_URL=database_url, OPENAI_API_KEY=OPENAI_KEY, SUPABASE_KEY=SUPABASE_KEY,
        API_KEY=API_KEY, TASK_SECRET=TASK_SECRET, IMAGE_PROVIDER="demo",
        STORAGE_BACKEND="local", LOG_LEVEL="DEBUG", MAX_ATTEMPTS="2", DEMO_LATENCY_MS="0",
        # Every 429 counts, so the always-rate-limited prompt fails within the test.
        RATE_LIMIT_BUDGET_S="0",
    )
    key = {"X-API-Key": API_KEY}
    answers: list[str] = []
    with httpx.Client(base_url=worker.url, timeout=10) as client:
        # Refused callers, some holding near-misses of the real secrets.
        for headers in ({"X-API-Key": API_KEY[:-1]}, {"Authorization": f"Bearer {API_KEY}x"},
                        {"X-API-Key": TASK_SECRET}):
            answers.append(client.get("/api/admin/jobs", headers=headers).text)
        answers.append(client.post(TASK, json={"task_id": "x"},
                                   headers={"X-Task-Secret": TASK_SECRET[:-1]}).text)
        answers.append(client.post("/api/admin/generate/batch", headers=key,
                                   json={"prompts": [""], "style": OPENAI_KEY}).text)
        job = client.post("/api/admin/generate/batch", headers=key, json={"prompts": [
            "a fine picture", "refused [[demo:moderation_blocked]]",
            "always down [[demo:server_error]]", "bad request [[demo:invalid_request]]",
            "slow down [[demo:rate_limit]]"]}).json()
        rows = wait_finished(engine, job["id"], timeout_s=60)
        assert rows == {"succeeded": 1, "failed": 4}
        answers.append(client.get(f"/api/admin/jobs/{job['id']}/tasks", headers=key).text)
        answers.append(client.get(f"/api/admin/jobs/{job['id']}", headers=key).text)
        answers.append(client.get("/metrics").text)
        answers.append(client.get("/healthz").text)
        answers.append(client.get("/openapi.json").text)
    worker.stop()
    logs = worker.logs()
    assert '"process_task_failed"' in logs and "task_auth_refused" in logs  # it did fail
    _assert_clean(logs, secrets, "the worker log")
    for i, answer in enumerate(answers):
        _assert_clean(answer, secrets, f"answer {i}")


def test_an_unreachable_database_does_not_print_its_password(tmp_path: Path) -> None:
    # Nothing listens on port 9: the worker cannot start, and says so without the password.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(PYTHONPATH=str(REPO_ROOT), LOG_LEVEL="DEBUG", PORT="9",
               DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@127.0.0.1:9/app?connect_timeout=2",
               OPENAI_API_KEY=OPENAI_KEY, IMAGE_PROVIDER="demo", API_KEY=API_KEY)
    done = subprocess.run([sys.executable, "-m", "worker"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "127.0.0.1" in output or "connection" in output.lower()  # it did report the failure
    _assert_clean(output, [DB_PASSWORD, OPENAI_KEY, API_KEY], "start-up output")
