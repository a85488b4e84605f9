"""The OpenAI provider end to end: a worker process with IMAGE_PROVIDER=openai calls the
tests' OpenAI-compatible server (testing/openai_stub.py) with the real ``openai``
client over real HTTP. Each failure kind must end in the right task state with the right
attempt count, and each attempt must be exactly one HTTP call (the SDK's retries are off).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from testing.openai_stub import OpenAIStub, Reply
from tests.conftest import WorkerProcess, wait_for

BATCH = "/api/admin/generate/batch"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


def _openai_worker(start_worker: Callable[..., WorkerProcess], stub: OpenAIStub,
                   **overrides: str) -> WorkerProcess:
    values = {"IMAGE_PROVIDER": "openai", "OPENAI_BASE_URL": stub.base_url,
              "OPENAI_API_KEY": stub.api_key, "OPENAI_TIMEOUT_S": "1", "MAX_ATTEMPTS": "3",
              **overrides}
    return start_worker(**values)


def _run_batch(worker: WorkerProcess, prompts: list[str]) -> str:
    response = httpx.post(worker.url + BATCH, timeout=30, json={
        "prompts": prompts, "style": "none", "count_per_prompt": 1,
        "model": "gpt-image-1.5", "size": "1024x1024", "quality": "low"})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]

    def finished() -> bool:
        body = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=10).json()
        return bool(body["progress_percentage"] == 100.0)

    wait_for(finished, timeout_s=60, message="the batch to finish")
    return job_id


def _tasks(engine: Engine, job_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT prompt, status, attempts, last_error_code, input_tokens, output_tokens, "
            "image_path FROM generation_tasks WHERE job_id = :j"), {"j": job_id}).all()
    return {row.prompt: row for row in rows}


def test_each_outcome_ends_in_the_right_state_with_one_call_per_attempt(
    start_worker: Callable[..., WorkerProcess], engine: Engine, stub: OpenAIStub,
    tmp_path: Any,
) -> None:
    stub.on_prompt("rate limited twice", Reply.rate_limited(retry_after_s=0.4),
                   Reply.rate_limited(retry_after_s=0.4), Reply.ok())
    stub.on_prompt("always rate limited", *[Reply.rate_limited(retry_after_s=0.1)] * 5)
    stub.on_prompt("server error once", Reply.server_error(500), Reply.ok())
    stub.on_prompt("hangs once", Reply.hang(30), Reply.ok())
    stub.on_prompt("refused by moderation", Reply.moderation(), Reply.ok())
    prompts = ["plain success", "rate limited twice", "always rate limited",
               "server error once", "hangs once", "refused by moderation"]
    # No rate-limit budget: every 429 uses up an attempt (the default budget is below).
    worker = _openai_worker(start_worker, stub, RATE_LIMIT_BUDGET_S="0")
    tasks = _tasks(engine, _run_batch(worker, prompts))

    outcome = {p: (t.status, t.attempts, t.last_error_code) for p, t in tasks.items()}
    assert outcome["plain success"] == ("succeeded", 1, None)
    assert outcome["rate limited twice"][:2] == ("succeeded", 3)
    assert outcome["always rate limited"] == ("failed", 3, "rate_limit_exceeded")
    assert outcome["server error once"][:2] == ("succeeded", 2)
    assert outcome["hangs once"][:2] == ("succeeded", 2)
    assert outcome["refused by moderation"] == ("failed", 1, "moderation_blocked")

    # Attempts counted once: every attempt is exactly one request to the API.
    for prompt, task in tasks.items():
        assert len(stub.calls_for(prompt)) == task.attempts, prompt
    # The 429's retry-after was honoured before the next try.
    times = [c.at_s for c in stub.calls_for("rate limited twice")]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.35
    # Model settings reached the API; usage tokens were recorded; the PNG was stored.
    call = stub.calls_for("plain success")[0]
    assert (call.model, call.size, call.quality, call.n) == ("gpt-image-1.5", "1024x1024",
                                                             "low", 1)
    ok = tasks["plain success"]
    assert ok.input_tokens and ok.input_tokens > 0 and ok.output_tokens == 1056
    image = (tmp_path / "images" / ok.image_path).read_bytes()
    assert image.startswith(b"\x89PNG")
    with engine.connect() as conn:
        job = conn.execute(text("SELECT status, completed_tasks, failed_tasks FROM "
                                "generation_jobs")).one()
    assert tuple(job) == ("completed_with_errors", 4, 2)


def test_rate_limits_within_the_budget_do_not_use_up_attempts(
    start_worker: Callable[..., WorkerProcess], engine: Engine, stub: OpenAIStub,
) -> None:
    # MAX_ATTEMPTS=3, yet five 429s in a row: each gives its attempt back (the streak is
    # far younger than RATE_LIMIT_BUDGET_S), so the sixth call succeeds. Other failures
    # still count: two 500s after the 429s leave one charged attempt.
    stub.on_prompt("long outage", *[Reply.rate_limited(retry_after_s=0.2)] * 5,
                   Reply.server_error(500), Reply.server_error(500), Reply.ok())
    worker = _openai_worker(start_worker, stub)
    tasks = _tasks(engine, _run_batch(worker, ["long outage"]))
    task = tasks["long outage"]
    assert (task.status, task.attempts) == ("succeeded", 8)
    assert len(stub.calls_for("long outage")) == 8
    with engine.connect() as conn:
        free = conn.execute(text("SELECT free_attempts FROM generation_tasks")).scalar()
    assert free == 5
    times = [c.at_s for c in stub.calls_for("long outage")][:6]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.15  # Retry-After waited


def test_a_wrong_api_key_fails_permanently_and_loudly(
    start_worker: Callable[..., WorkerProcess], engine: Engine, stub: OpenAIStub,
) -> None:
    worker = _openai_worker(start_worker, stub, OPENAI_API_KEY="sk-wrong")
    tasks = _tasks(engine, _run_batch(worker, ["a lighthouse at dusk"]))
    task = tasks["a lighthouse at dusk"]
    assert (task.status, task.attempts, task.last_error_code) == (
        "failed", 1, "authentication_error")
    assert len(stub.calls) == 1
    logs = worker.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    loud = [e for e in lines if e.get("action") == "provider_auth_error"]
    assert loud and loud[0]["severity"] == "ERROR" and "OPENAI_API_KEY" in loud[0]["message"]
    assert "sk-wrong" not in logs  # the key itself is a secret: redacted everywhere
