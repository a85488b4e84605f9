"""The batch poll endpoint is a task endpoint: only the queue's credentials (the shared
secret locally, a verified OIDC token in production) reach it, never the admin key."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from core.batch.poller import POLL_PATH
from tests.conftest import WorkerProcess
from tests.security import API_KEY, TASK_SECRET


def test_batch_poll_needs_the_task_secret_and_not_the_admin_key(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(API_KEY=API_KEY, TASK_SECRET=TASK_SECRET, RUN_DISPATCHER="false")
    body = {"batch_id": str(uuid.uuid4()), "round": 0}
    for headers in ({}, {"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"},
                    {"X-Task-Secret": API_KEY}, {"X-Task-Secret": "wrong"},
                    {"X-Task-Secret": ""}, {"X-Task-Secret": TASK_SECRET + "x"}):
        r = httpx.post(worker.url + POLL_PATH, json=body, headers=headers, timeout=10)
        assert r.status_code == 401, headers
    r = httpx.post(worker.url + POLL_PATH, json=body, headers={"X-Task-Secret": TASK_SECRET},
                   timeout=10)
    # The demo worker has no batch provider: accepted and dropped (200), never retried.
    assert r.status_code == 200 and r.json()["outcome"] == "no_batch_provider"
