"""A running worker's job API as the tests drive it: submit a batch, read a job's status,
wait until every task has an outcome. ``headers`` carries the admin key where the worker
wants one (production mode: ``testing.cloudtasks_fake.ADMIN``)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import WorkerProcess, wait_for

BATCH = "/api/admin/generate/batch"


def submit(worker: WorkerProcess, prompts: list[str], *,
           headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """POST a batch (no style, one image a prompt unless ``extra`` says otherwise); the
    job as the API answers it."""
    body = {"prompts": prompts, "style": "none", "count_per_prompt": 1, **extra}
    response = httpx.post(worker.url + BATCH, json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def job_status(worker: WorkerProcess, job_id: str, *,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", headers=headers,
                         timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_done(worker: WorkerProcess, job_id: str, timeout_s: float = 90, *,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job's status once its progress is 100 % (every task succeeded, failed or was
    cancelled), read through the API."""
    def finished() -> dict[str, Any] | None:
        body = job_status(worker, job_id, headers=headers)
        return body if body["progress_percentage"] == 100.0 else None

    result: dict[str, Any] = wait_for(finished, timeout_s=timeout_s, interval_s=0.2,
                                      message=f"job {job_id}")
    return result
