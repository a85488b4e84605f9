"""Every misconfiguration of the deployment guide, through the real entry points as
subprocesses: ``python -m worker``, ``python -m dashboard --check`` and
``python -m cli.main init-db``
each print ONE line on stderr naming the variable (and the accepted forms), exit with
status 2 and never show a traceback or a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.openai_stub import OpenAIStub
from tests.conftest import _ISOLATED_ENV, REPO_ROOT, free_port

PROGRAMS = {
    "worker": [sys.executable, "-m", "worker"],
    "dashboard": [sys.executable, "-m", "dashboard", "--check"],
    "cli": [sys.executable, "-m", "cli.main", "init-db"],
}
DB_PASSWORD = "Pg-Secret-pw-4711"


def _base_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in _ISOLATED_ENV
             and k not in ("DATABASE_URL", "GOOGLE_APPLICATION_CREDENTIALS")}
    # No Google credentials anywhere: no ADC file (HOME, CLOUDSDK_CONFIG) and no probe of
    # the metadata server (which is not a loopback address).
    return {**clean, **env, "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "NO_GCE_CHECK": "True", "PORT": str(free_port()), "HOST": "127.0.0.1"}


def run(program: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PROGRAMS[program], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=90)


def assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr + done.stdout
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


CASES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "bad PORT": ({"PORT": "abc"}, ("PORT", "integer")),
    # Spend limits and the Cloud Tasks window
    "bad BUDGET_DAILY_USD_BY_KEY": ({"BUDGET_DAILY_USD_BY_KEY": "alice"},
                                    ("BUDGET_DAILY_USD_BY_KEY", "name=usd")),
    "negative BUDGET_DAILY_USD": ({"BUDGET_DAILY_USD": "-1"},
                                  ("BUDGET_DAILY_USD", "greater than or equal to 0")),
    "zero CLOUD_TASKS_WINDOW": ({"CLOUD_TASKS_WINDOW": "0"},
                                ("CLOUD_TASKS_WINDOW", "greater than or equal to 1")),
    "unknown ENVIRONMENT": ({"ENVIRONMENT": "prod"}, ("ENVIRONMENT", "'production'")),
    "Cloud Tasks without GCP_PROJECT": (
        {"USE_CLOUD_TASKS": "true", "WORKER_URL": "http://127.0.0.1:9"},
        ("USE_CLOUD_TASKS", "GCP_PROJECT")),
    "unknown OPENAI_IMAGE_MODEL": (
        {"OPENAI_IMAGE_MODEL": "dall-e-3"}, ("OPENAI_IMAGE_MODEL", "accepted:", "gpt-image-2")),
    "shut-down OPENAI_IMAGE_MODEL": (
        {"OPENAI_IMAGE_MODEL": "gpt-image-1"}, ("OPENAI_IMAGE_MODEL", "shut down", "gpt-image-2")),
    "unknown OPENAI_IMAGE_SIZE": (
        {"OPENAI_IMAGE_SIZE": "512x512"}, ("OPENAI_IMAGE_SIZE", "1024x1024")),
    "CORS_ORIGINS broken JSON list": (
        {"CORS_ORIGINS": '["https://app.example.com"'}, ("CORS_ORIGINS", "JSON")),
    "CORS_ORIGINS not an origin": (
        {"CORS_ORIGINS": "app.example.com"}, ("CORS_ORIGINS", "scheme://host")),
    "WORKER_URL not a URL": ({"WORKER_URL": "worker.run.app"}, ("WORKER_URL", "task URL")),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_setting_is_one_line_and_exit_2(program: str, case: str, env: dict[str, str],
                                             tmp_path: Path) -> None:
    overrides, needles = CASES[case]
    assert_one_line(run(program, {**_base_env(env, tmp_path), **overrides}), *needles)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_unreachable_database_names_host_and_port_never_the_password(
        program: str, env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{port}/app"
    err = assert_one_line(run(program, {**_base_env(env, tmp_path), "DATABASE_URL": url}),
                          "DATABASE_URL", f"127.0.0.1:{port}")
    assert DB_PASSWORD not in err


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_cloud_tasks_without_credentials_is_refused_in_every_environment(
        program: str, env: dict[str, str], tmp_path: Path) -> None:
    values = {**_base_env(env, tmp_path), "USE_CLOUD_TASKS": "true",
              "GCP_PROJECT": "p", "WORKER_URL": "https://worker.example.run.app"}
    assert_one_line(run(program, values), "USE_CLOUD_TASKS", "credentials",
                    "GOOGLE_APPLICATION_CREDENTIALS")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_missing_embedded_database_package_is_one_line(program: str, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    # pgserver is the `embedded` extra, absent from the slim images: shadow it here.
    shadow = tmp_path / "shadow" / "pgserver"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pgserver is not installed')\n")
    values = {**_base_env(env, tmp_path), "PYTHONPATH": str(shadow.parent)}
    values.pop("DATABASE_URL")
    assert_one_line(run(program, values), "DATABASE_URL", "pgserver")


@pytest.mark.parametrize("missing", ["OPENAI_API_KEY", "SUPABASE_KEY"])
def test_production_never_falls_back_to_demo_or_local_storage(
        missing: str, env: dict[str, str], tmp_path: Path) -> None:
    values = {**_base_env(env, tmp_path), "ENVIRONMENT": "production", "API_KEY": "k" * 32,
              "TASK_SECRET": "t" * 32, "OPENAI_API_KEY": "sk-x", "SUPABASE_KEY": "sb-x",
              "SUPABASE_URL": "http://127.0.0.1:9"}
    values.pop(missing)
    for program in ("worker", "cli"):
        assert_one_line(run(program, values), "ENVIRONMENT=production", missing)


def test_production_on_demo_and_local_only_by_name_with_a_warning(
        env: dict[str, str], tmp_path: Path, start_worker: object) -> None:
    from tests.conftest import WorkerProcess

    values = {**_base_env(env, tmp_path), "ENVIRONMENT": "production", "API_KEY": "k" * 32,
              "TASK_SECRET": "t" * 32, "IMAGE_PROVIDER": "demo", "STORAGE_BACKEND": "local"}
    worker = WorkerProcess(env=values, log_path=tmp_path / "worker.log")
    try:
        worker.start()
        logs = worker.logs()
    finally:
        worker.stop()
    assert "IMAGE_PROVIDER=demo" in logs and "STORAGE_BACKEND=local" in logs
    assert '"level": "WARNING"' in logs or "WARNING" in logs


def test_production_refuses_a_rejected_openai_key(env: dict[str, str], tmp_path: Path) -> None:
    with OpenAIStub(api_key="sk-the-right-key") as stub:
        values = {**_base_env(env, tmp_path), "ENVIRONMENT": "production",
                  "API_KEY": "k" * 32, "TASK_SECRET": "t" * 32, "STORAGE_BACKEND": "local",
                  "OPENAI_API_KEY": "sk-wrong-key-123", "OPENAI_BASE_URL": stub.base_url}
        err = assert_one_line(run("worker", values), "OPENAI_API_KEY", "rejected", "401")
    assert "sk-wrong-key-123" not in err


def test_outside_production_a_rejected_key_shows_on_healthz(
        env: dict[str, str], start_worker: object) -> None:
    import httpx

    with OpenAIStub(api_key="sk-the-right-key") as stub:
        worker = start_worker(IMAGE_PROVIDER="openai", OPENAI_API_KEY="sk-wrong-key-123",  # type: ignore[operator]
                              OPENAI_BASE_URL=stub.base_url)
        health = httpx.get(worker.url + "/healthz", timeout=5).json()
    assert health["status"] == "degraded"
    assert health["provider"] == "unauthenticated"
    assert any("OPENAI_API_KEY was rejected" in r for r in health["reasons"])
    assert "sk-wrong-key-123" not in str(health)


def test_dashboard_in_production_needs_no_api_key_or_task_secret(
        env: dict[str, str], tmp_path: Path) -> None:
    values = {**_base_env(env, tmp_path), "ENVIRONMENT": "production",
              "IMAGE_PROVIDER": "demo", "STORAGE_BACKEND": "local",
              "DASHBOARD_PASSWORD": "correct horse battery staple"}
    done = run("dashboard", values)
    assert done.returncode == 0, done.stderr
    assert "password" in done.stderr


@pytest.mark.parametrize("written", [
    '["https://app.example.com/"]',                      # the deployment guide's form
    "https://other.example, https://app.example.com/",   # comma
    "https://other.example https://app.example.com",     # space
])
def test_cors_origins_in_every_form_pass_the_browsers_preflight(
        written: str, start_worker: object) -> None:
    import httpx

    worker = start_worker(CORS_ORIGINS=written, RUN_DISPATCHER="false")  # type: ignore[operator]
    response = httpx.options(worker.url + "/api/admin/jobs", timeout=10, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
