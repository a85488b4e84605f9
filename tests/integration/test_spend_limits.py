"""Spend limits with a real worker, the local dispatcher and the OpenAI stub
(the real ``openai`` client; each answer's ``usage`` is billed at core/billing/prices.csv's
gpt-image-2 rates). A job with max_cost_usd stops at its cap (give or take one in-flight
window), its tasks wait (none fails), /healthz and the job say why and how much was spent,
and raising the cap resumes it to the end. A daily budget holds every job the same way."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from core.billing import charges
from testing.openai_stub import OpenAIStub
from tests.conftest import WorkerProcess, wait_for

BATCH = "/api/admin/generate/batch"
IN_FLIGHT = 4
TASKS = 40
CAP_USD = 0.30


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(latency_s=0.2) as server:
        yield server


def _worker(start_worker: Callable[..., WorkerProcess], stub: OpenAIStub,
            **overrides: str) -> WorkerProcess:
    return start_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                        OPENAI_API_KEY=stub.api_key, OPENAI_IMAGE_MODEL="gpt-image-2",
                        LOCAL_MAX_CONCURRENCY=str(IN_FLIGHT), ADAPTIVE_CONCURRENCY="false",
                        SPEND_CHECK_S="0.3", **overrides)


def _counts(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.status: int(r.n) for r in conn.execute(text(
            "SELECT status, count(*) AS n FROM generation_tasks WHERE job_id = :j "
            "GROUP BY status"), {"j": job_id}).all()}


def _settled(engine: Engine, job_id: str, quiet_s: float = 2.0) -> dict[str, int]:
    """Counts once nothing has moved for quiet_s (nothing running, none succeeding)."""
    last: dict[str, int] = {}
    since = time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        now = _counts(engine, job_id)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and not now.get("running"):
            return now
        time.sleep(0.1)
    raise AssertionError(f"job never settled: {last}")


def _billed(engine: Engine, job_id: str) -> Decimal:
    cost = charges.job_cost(job_id, "gpt-image-2", "openai", engine=engine)  # type: ignore[arg-type]
    assert cost.actual_usd is not None
    return cost.actual_usd


def _unit(engine: Engine, job_id: str) -> Decimal:
    return _billed(engine, job_id) / _counts(engine, job_id)["succeeded"]


def _submit(worker: WorkerProcess, n: int, **extra: Any) -> str:
    response = httpx.post(worker.url + BATCH, timeout=30, json={
        "prompts": [f"spend {i}" for i in range(n)], **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_a_job_stops_at_its_cap_waits_and_resumes_when_the_cap_is_raised(
        start_worker: Callable[..., WorkerProcess], engine: Engine, stub: OpenAIStub) -> None:
    worker = _worker(start_worker, stub)
    job_id = _submit(worker, TASKS, max_cost_usd=CAP_USD)
    counts = _settled(engine, job_id)
    billed, unit = _billed(engine, job_id), _unit(engine, job_id)
    window = IN_FLIGHT * unit
    print(f"FIGURES cap ${CAP_USD} billed ${billed:.4f} ({counts.get('succeeded')} images "
          f"at ${unit:.4f}), in-flight window ${window:.4f}")
    assert Decimal(str(CAP_USD)) - window <= billed <= Decimal(str(CAP_USD)) + window
    assert counts.get("failed", 0) == 0 and counts.get("queued", 0) > 0  # waiting, not failed
    health = httpx.get(worker.url + "/healthz", timeout=10).json()
    assert any("spend cap" in r and "max_cost_usd" in r for r in health["reasons"]), health
    assert health["spend"]["jobs_at_cap"][0]["id"] == job_id
    detail = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}", timeout=10).json()
    assert detail["status"] == "running" and detail["max_cost_usd"] == CAP_USD
    assert detail["spent_usd"] == pytest.approx(float(billed), abs=0.001)

    raised = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/schedule", timeout=10,
                        json={"max_cost_usd": 10})
    assert raised.status_code == 200, raised.text
    wait_for(lambda: _counts(engine, job_id).get("succeeded") == TASKS, timeout_s=60,
             message="the job to resume and finish")
    assert _counts(engine, job_id) == {"succeeded": TASKS}
    assert len(stub.calls) == TASKS  # every image called for once


def test_a_daily_budget_holds_every_job_and_a_bad_cap_is_one_clear_line(
        start_worker: Callable[..., WorkerProcess], engine: Engine, stub: OpenAIStub) -> None:
    worker = _worker(start_worker, stub, BUDGET_DAILY_USD="0.2")
    job_id = _submit(worker, 30)
    counts = _settled(engine, job_id)
    assert 0 < counts["succeeded"] < 30 and counts.get("failed", 0) == 0
    health = httpx.get(worker.url + "/healthz", timeout=10).json()
    daily = health["spend"]["budgets"][0]
    assert daily["scope"] == "daily" and daily["held"] and daily["limit_usd"] == 0.2
    assert any("BUDGET_DAILY_USD" in r for r in health["reasons"])
    bad = httpx.post(worker.url + BATCH, timeout=10, json={"prompts": ["x"],
                                                           "max_cost_usd": -1})
    assert bad.status_code == 422 and bad.json()["field"] == "max_cost_usd"
    bad = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/schedule", timeout=10,
                     json={"priority": "urgent"})
    assert bad.status_code == 422 and bad.json()["field"] == "priority"
