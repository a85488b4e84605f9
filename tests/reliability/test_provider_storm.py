"""Fault 4: a provider storm (30 % 429 with Retry-After, 10 % 500, 5 % timeouts) plus
prompts the model refuses for good.

The storm is drawn from (task id, attempt), so the test knows in advance at which attempt
each task first gets through, and checks the attempt count of every task exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from core.providers.demo import StormRates
from tests.conftest import WorkerProcess
from tests.reliability import (
    TASK,
    assert_counters_match_rows,
    assert_exactly_once,
    submit,
    wait_finished,
)

STORM = StormRates(rate_limit=0.30, server_error=0.10, timeout=0.05, retry_after_s=0.2)
MAX_ATTEMPTS = 20  # a task failing 20 storm draws in a row: 0.45^20, about 1 in 8 million
GOOD, REFUSED = 150, 6


def _first_clear_attempt(task_id: str) -> int:
    attempt = 1
    while STORM.failure(f"{task_id}:{attempt}") is not None:
        attempt += 1
    return attempt


def _storm_env(**extra: str) -> dict[str, str]:
    return {"DEMO_RATE_LIMIT_RATE": str(STORM.rate_limit),
            "DEMO_SERVER_ERROR_RATE": str(STORM.server_error),
            "DEMO_TIMEOUT_RATE": str(STORM.timeout),
            "DEMO_RETRY_AFTER_S": str(STORM.retry_after_s),
            "MAX_ATTEMPTS": str(MAX_ATTEMPTS), "DEMO_IMAGE_PX": "32", **extra}


@pytest.mark.slow
def test_provider_storm_all_tasks_succeed_and_exactly_the_refused_prompts_fail(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    # This test is about retries, not throughput: a fixed in-flight limit, since the adaptive
    # one holds the whole queue for every 429's Retry-After (tested with the dispatcher).
    worker = start_worker(**_storm_env(DEMO_LATENCY_MS="10", LOCAL_MAX_CONCURRENCY="10",
                                       ADAPTIVE_CONCURRENCY="false"))
    prompts = [f"storm picture {i}" for i in range(GOOD)]
    refused = {f"refused picture {i} [[demo:moderation_blocked]]" for i in range(REFUSED)}
    for i, prompt in enumerate(sorted(refused)):
        prompts.insert(i * 25, prompt)
    job_id = submit(worker, prompts)["id"]
    rows = wait_finished(engine, job_id, timeout_s=90)

    with engine.connect() as conn:
        tasks = conn.execute(text(
            "SELECT id, prompt, status, attempts, last_error_code FROM generation_tasks "
            "WHERE job_id = :j"), {"j": job_id}).all()
        job = conn.execute(text("SELECT status FROM generation_jobs WHERE id=:j"),
                           {"j": job_id}).scalar()
    assert rows == {"succeeded": GOOD, "failed": REFUSED}
    assert job == "completed_with_errors"
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, tmp_path / "images", job_id)
    failed = {t.prompt for t in tasks if t.status == "failed"}
    assert failed == refused
    assert all(t.attempts == 1 and t.last_error_code == "moderation_blocked"
               for t in tasks if t.status == "failed")
    # Every storm-hit attempt was retried, none more than needed, all within MAX_ATTEMPTS.
    good = [t for t in tasks if t.status == "succeeded"]
    expected = {str(t.id): _first_clear_attempt(str(t.id)) for t in good}
    assert {str(t.id): t.attempts for t in good} == expected
    assert max(expected.values()) <= MAX_ATTEMPTS
    codes = Counter(t.last_error_code for t in good if t.attempts > 1)
    assert set(codes) == {"rate_limited", "upstream_error", "timeout"}, codes
    storm_failures = sum(expected.values()) - len(good)
    print(f"FIGURES storm: tasks={GOOD + REFUSED} injected_failures={storm_failures} "
          f"last_codes={dict(codes)} max_attempt={max(expected.values())} lost=0 duplicates=0")


def test_storm_answers_tell_the_queue_how_to_retry(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    # Deliveries by hand (no dispatcher): 429 with Retry-After, 500, 503 for a timeout.
    worker = start_worker(**_storm_env(RUN_DISPATCHER="false", DEMO_LATENCY_MS="0"))
    job_id = submit(worker, [f"answer picture {i}" for i in range(40)])["id"]
    with engine.connect() as conn:
        ids = [str(r.id) for r in conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id=:j"), {"j": job_id})]
    seen: dict[str, tuple[int, str | None]] = {}
    for task_id in ids:
        failure = STORM.failure(f"{task_id}:1")
        r = httpx.post(worker.url + TASK, json={"task_id": task_id}, timeout=30)
        if failure is None:
            assert (r.status_code, r.json()["outcome"]) == (200, "succeeded")
        else:
            assert r.json()["outcome"] == "retry"
            seen[failure.code] = (r.status_code, r.headers.get("retry-after"))
    # Every retry answer says when the table lets the task be claimed again (the backoff,
    # at least the provider's Retry-After): an earlier delivery would be answered not_due.
    expected = {"rate_limited": (429, "1"), "upstream_error": (500, "1"),
                "timeout": (503, "1")}
    assert seen == {code: expected[code] for code in seen}
    assert "rate_limited" in seen
