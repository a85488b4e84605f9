"""Pure parts of the configuration: the accepted forms of WORKER_URL and CORS_ORIGINS, the pooler
mode, the undeliverable rule and the one-line description of invalid settings."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from core import worker_url
from core.config import Settings, describe_validation_error, parse_origins
from core.db import connect_args, pooler_mode
from core.dispatch import undeliverable
from core.dispatch.base import EnqueueResult
from core.errors import ConfigError
from core.jobs.handover_report import handover_message

TASK = "/api/admin/worker/process-task"


@pytest.mark.parametrize("written", [
    "https://w-abc.a.run.app",                       # base URL
    "https://w-abc.a.run.app/",                      # base URL, trailing slash
    "https://w-abc.a.run.app" + TASK,                # the deployment guide's form
    "https://w-abc.a.run.app" + TASK + "/",
])
def test_worker_url_in_either_form_gives_one_task_url_and_audience(written: str) -> None:
    assert worker_url.task_url(written) == "https://w-abc.a.run.app" + TASK
    assert worker_url.oidc_audience(written) == "https://w-abc.a.run.app"
    assert worker_url.oidc_audience(written) in worker_url.accepted_audiences(written)
    assert worker_url.task_url(written) in worker_url.accepted_audiences(written)


def test_worker_url_under_a_path_prefix_keeps_it() -> None:
    assert worker_url.task_url("http://h/v2") == "http://h/v2" + TASK
    with pytest.raises(ConfigError, match="WORKER_URL"):
        worker_url.task_url("w-abc.a.run.app")


@pytest.mark.parametrize(("raw", "origins"), [
    ('["https://a.example/", "https://b.example"]', ["https://a.example", "https://b.example"]),
    ("https://a.example,https://b.example/", ["https://a.example", "https://b.example"]),
    ("https://a.example https://b.example", ["https://a.example", "https://b.example"]),
    ("http://localhost:8501/", ["http://localhost:8501"]),
    ("", []),
])
def test_cors_origins_forms(raw: str, origins: list[str]) -> None:
    assert parse_origins(raw) == origins


def test_cors_origins_json_form_reaches_the_settings() -> None:
    settings = Settings(CORS_ORIGINS='["https://app.example.com/"]')  # type: ignore[arg-type]
    assert settings.CORS_ORIGINS == ["https://app.example.com"]


@pytest.mark.parametrize(("setting", "url", "mode"), [
    ("auto", "postgresql+psycopg://u:p@aws-0-eu.pooler.supabase.com:6543/postgres",
     "transaction"),
    ("auto", "postgresql+psycopg://u:p@aws-0-eu.pooler.supabase.com:5432/postgres", "direct"),
    ("auto", "postgresql+psycopg://u:p@db.ref.supabase.co:5432/postgres", "direct"),
    ("transaction", "postgresql+psycopg://u:p@127.0.0.1:6432/db", "transaction"),
    ("session", "postgresql+psycopg://u:p@127.0.0.1:6543/db", "session"),
])
def test_pooler_mode(setting: str, url: str, mode: str) -> None:
    assert pooler_mode(setting, url)[0] == mode
    assert connect_args(mode) == ({"prepare_threshold": None} if mode == "transaction"
                                  else {})


URL = "http://127.0.0.1:9" + TASK


@pytest.mark.parametrize(("status", "error", "cause"), [
    (404, None, "http_404"),                     # wrong path
    (405, None, "http_405"),
    (401, None, "http_401"),                     # TASK_SECRET / OIDC mismatch
    (403, None, "http_403"),
    (200, None, None),                           # handled
    (429, None, None),                           # ordinary retry
    (503, None, None),
    (500, None, None),
    (None, httpx.ConnectError("[Errno 111] Connection refused"), "connect_refused"),
    (None, httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version"), "tls_error"),
    (None, httpx.ConnectTimeout("timed out"), "connect_timeout"),
    (None, httpx.ReadTimeout("read"), None),     # the handler may be running
    (None, httpx.RemoteProtocolError("dropped"), None),
])
def test_undeliverable_rule(status: int | None, error: Exception | None,
                            cause: str | None) -> None:
    found = undeliverable.classify(URL, status=status, error=error)
    assert (found.code if found else None) == cause
    if found:
        assert URL in found.detail


def test_invalid_settings_are_one_line_without_secret_values() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(PORT="abc", DATABASE_URL=123)  # type: ignore[arg-type]
    line = describe_validation_error(info.value)
    assert "\n" not in line and "PORT='abc'" in line


def test_production_defaults_to_openai_and_supabase_and_names_their_keys() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(ENVIRONMENT="production", API_KEY="k", TASK_SECRET="t",
                 DATABASE_URL="postgresql://u@h/db")  # type: ignore[arg-type]
    assert "OPENAI_API_KEY" in info.value.message and "SUPABASE_KEY" in info.value.message
    named = Settings(ENVIRONMENT="production", API_KEY="k", TASK_SECRET="t",  # type: ignore[arg-type]
                     DATABASE_URL="postgresql://u@h/db", IMAGE_PROVIDER="demo",
                     STORAGE_BACKEND="local")
    assert len(named.start_warnings()) == 2


def test_handover_message_says_what_happened() -> None:
    ok = handover_message(3, EnqueueResult(enqueued=3), "failed", sweep_interval_s=60)
    assert ok == ("success", "Requeued 3 failed task(s).")
    kind, text = handover_message(2, EnqueueResult(failed=2, errors=["ServiceUnavailable: x"]),
                                  "failed", sweep_interval_s=60)
    assert kind == "error" and "sweeper" in text and "ServiceUnavailable: x" in text


def test_undeliverable_detail_never_carries_credentials_from_the_url() -> None:
    cause = undeliverable.classify("https://user:s3cret@w.run.app/x?token=abc", status=404)
    assert cause is not None
    assert "s3cret" not in cause.detail and "token" not in cause.detail
    assert "https://w.run.app/x" in cause.detail
