"""Pure parts of the production path: Cloud Tasks task names and payloads, the queue
config, the CLI's queue summary, and the OpenAI error mapping (real SDK exception
objects, no client, no network)."""

from __future__ import annotations

import json
import re
import uuid

import httpx2
import openai
import pytest

from cli.main import queue_summary
from core.config import Settings
from core.dispatch import TaskRef
from core.dispatch.cloudtasks.dispatcher import (
    QUEUE_MAX_ATTEMPTS,
    build_task,
    dispatch_deadline_s,
    queue_config,
    task_id_for,
)
from core.errors import ConfigError
from core.providers.openai_images import failure_from_sdk_error
from core.worker_url import TASK_PATH

QUEUE = "projects/p/locations/us-central1/queues/images"
TASK_ID = uuid.UUID("6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5")


def _settings(**values: object) -> Settings:
    base = {"WORKER_URL": "https://worker-abc.a.run.app/", "GCP_PROJECT": "p",
            "CLOUD_TASKS_SERVICE_ACCOUNT": "tasks@p.iam.gserviceaccount.com"}
    return Settings.model_validate({**base, **values})


def test_task_names_are_stable_per_generation_hash_like_and_valid() -> None:
    first = task_id_for(TaskRef(TASK_ID, 0))
    assert first == task_id_for(TaskRef(TASK_ID, 0))  # repeated enqueue: same name
    assert first != task_id_for(TaskRef(TASK_ID, 1))  # retry: a fresh name
    # Cloud Tasks allows [A-Za-z0-9_-], up to 500 characters.
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", first)
    # Neighbouring ids do not share a prefix (no sequential names, no hot key range).
    neighbour = task_id_for(TaskRef(uuid.UUID(int=TASK_ID.int + 1), 0))
    assert first[:4] != neighbour[:4]


def test_task_payload_is_an_oidc_http_post_of_the_task_id() -> None:
    task = build_task(_settings(DISPATCH_DEADLINE_S=300), QUEUE, TaskRef(TASK_ID, 2))
    request = task.http_request
    assert task.name == f"{QUEUE}/tasks/{task_id_for(TaskRef(TASK_ID, 2))}"
    assert request.url == "https://worker-abc.a.run.app" + TASK_PATH
    assert json.loads(request.body) == {"task_id": str(TASK_ID)}  # ids only, far < 100 KB
    assert request.headers["Content-Type"] == "application/json"
    assert request.oidc_token.service_account_email == "tasks@p.iam.gserviceaccount.com"
    assert request.oidc_token.audience == "https://worker-abc.a.run.app"
    assert task.dispatch_deadline.total_seconds() == 300


@pytest.mark.parametrize(("configured_s", "sent_s"), [
    (1, 15),       # Cloud Tasks' minimum
    (300, 300),    # within range: as configured
    (1800, 1800),  # the maximum
])
def test_dispatch_deadline_is_clamped_to_what_cloud_tasks_accepts(
    configured_s: float, sent_s: int,
) -> None:
    assert dispatch_deadline_s(_settings(DISPATCH_DEADLINE_S=configured_s)) == sent_s


def test_build_task_needs_a_worker_url() -> None:
    with pytest.raises(ConfigError, match="WORKER_URL"):
        build_task(_settings(WORKER_URL=None), QUEUE, TaskRef(TASK_ID))


def test_queue_config_is_the_guides_with_transport_retries_for_hours() -> None:
    # MAX_ATTEMPTS is the table's; the queue only carries (core/dispatch/cloudtasks/handover.py).
    settings = _settings(MAX_ATTEMPTS=5, RETRY_MIN_BACKOFF_S=1.5, RETRY_MAX_BACKOFF_S=300,
                         RETRY_MAX_DOUBLINGS=4)
    summary = queue_summary(queue_config(settings, QUEUE))
    assert summary == {
        "name": QUEUE, "state": "STATE_UNSPECIFIED",
        "max_dispatches_per_second": 10.0, "max_concurrent_dispatches": 100,
        "max_attempts": QUEUE_MAX_ATTEMPTS, "min_backoff_s": 1.5,
        "max_backoff_s": 300.0, "max_doublings": 4,
    }


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    request = httpx2.Request("POST", "https://api.openai.com/v1/images/generations")
    return httpx2.Response(status, headers=headers or {}, request=request)


def _body(code: str | None, message: str = "refused") -> dict[str, object]:
    # What the SDK passes as ``body``: the "error" object of the answer.
    return {"message": message, "type": "x", "param": None, "code": code}


@pytest.mark.parametrize(("error", "expected"), [
    # 429 keeps the server's wait; retry-after-ms is the precise one.
    (openai.RateLimitError("rl", response=_response(429, {"retry-after": "7"}),
                           body=_body("rate_limit_exceeded")),
     (True, "rate_limit_exceeded", 7.0)),
    (openai.RateLimitError("rl", response=_response(429, {"retry-after-ms": "1500",
                                                          "retry-after": "2"}),
                           body=_body("rate_limit_exceeded")),
     (True, "rate_limit_exceeded", 1.5)),
    # 5xx retries.
    (openai.InternalServerError("boom", response=_response(500), body=_body(None)),
     (True, "upstream_error", None)),
    (openai.InternalServerError("down", response=_response(503), body=_body(None)),
     (True, "upstream_unavailable", None)),
    # A moderation refusal is final, with its code.
    (openai.BadRequestError("no", response=_response(400), body=_body("moderation_blocked")),
     (False, "moderation_blocked", None)),
    # Another invalid request is final too.
    (openai.BadRequestError("bad", response=_response(400), body=_body("invalid_value")),
     (False, "invalid_value", None)),
    # Credentials: final, one code whatever OpenAI calls it.
    (openai.AuthenticationError("key", response=_response(401), body=_body("invalid_api_key")),
     (False, "authentication_error", None)),
    (openai.PermissionDeniedError("org", response=_response(403), body=_body(None)),
     (False, "authentication_error", None)),
    # Timeouts and connection errors retry.
    (openai.APITimeoutError(request=httpx2.Request("POST", "https://x")),
     (True, "timeout", None)),
    (openai.APIConnectionError(request=httpx2.Request("POST", "https://x")),
     (True, "connection_error", None)),
])
def test_openai_errors_are_classified_once(
    error: openai.APIError, expected: tuple[bool, str, float | None],
) -> None:
    failure = failure_from_sdk_error(error)
    assert (failure.retryable, failure.code, failure.retry_after_s) == expected


def test_make_demo_names_the_model_it_really_uses() -> None:
    from core.config import Settings
    from worker.demo import describe

    assert describe(Settings(ENVIRONMENT="development")).startswith("the offline demo model")
    with_key = Settings(ENVIRONMENT="development", OPENAI_API_KEY="sk-x",
                        OPENAI_IMAGE_MODEL="gpt-image-1-mini")
    assert describe(with_key).startswith("OpenAI model gpt-image-1-mini")
