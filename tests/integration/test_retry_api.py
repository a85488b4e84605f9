"""POST /api/admin/jobs/{id}/retry-failed over HTTP against a real worker: refusals are
left alone unless asked, and a dry run counts and prices without changing anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import WorkerProcess, wait_for


def test_retry_failed_dry_run_and_refusals(start_worker: Callable[..., WorkerProcess]
                                           ) -> None:
    worker = start_worker(MAX_ATTEMPTS="1")
    job = httpx.post(worker.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": ["[[demo:moderation_blocked]] no", "[[demo:server_error]] unlucky",
                    "a fine chair"]}).json()
    status_url = f"{worker.url}/api/admin/jobs/{job['id']}/status"

    def failed(n: int) -> Callable[[], Any]:
        return lambda: httpx.get(status_url, timeout=10).json()["failed_tasks"] == n

    wait_for(failed(2), timeout_s=60, message="two failures")
    url = f"{worker.url}/api/admin/jobs/{job['id']}/retry-failed"
    dry = httpx.post(url, json={"dry_run": True}, timeout=10).json()
    assert (dry["requeued"], dry["refusals_left"], dry["dry_run"]) == (1, 1, True)
    assert dry["estimated_cost_usd"] == 0.0 and dry["failed_tasks"] == 2
    both = httpx.post(url, json={"dry_run": True, "include_refusals": True}, timeout=10)
    assert (both.json()["requeued"], both.json()["refusals_left"]) == (2, 0)
    assert httpx.get(status_url, timeout=10).json()["failed_tasks"] == 2  # untouched

    done = httpx.post(url, timeout=10).json()  # no body: refusals left alone
    assert (done["requeued"], done["refusals_left"], done["dry_run"]) == (1, 1, False)
    wait_for(failed(2), timeout_s=60, message="the server error fails again")
    bad = httpx.post(url, json={"dry_run": "maybe"}, timeout=10)
    assert bad.status_code == 422 and "dry_run" in bad.text
