"""Job-end webhooks against a receiver the test starts on loopback, through real workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from testing.webhook_receiver import WebhookReceiver
from tests.conftest import WorkerProcess, wait_for
from tests.support.worker_api import submit, wait_done

FAST = {"WEBHOOK_POLL_S": "0.1", "WEBHOOK_RETRY_BASE_S": "0.3",
        "DASHBOARD_URL": "http://127.0.0.1:8501/"}


def _notes(worker: WorkerProcess, job_id: str) -> list[dict[str, object]]:
    r = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/notifications")
    assert r.status_code == 200, r.text
    return list(r.json()["notifications"])


def test_receiver_failing_twice_gets_it_on_the_third_try_and_once_only(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        worker = start_worker(**FAST)
        job = submit(worker, ["a green teapot", "bad [[demo:moderation_blocked]]"],
                      name="Teapots <&> co", webhook_url=receiver.url)
        wait_done(worker, job["id"])
        wait_for(lambda: len(receiver.received) >= 1, timeout_s=30, message="first post")
        worker.stop()  # the sender restarts between two attempts
        worker.start()
        wait_for(lambda: len(receiver.received) >= 3, timeout_s=30, message="3 posts")
        body = receiver.received[2].body
        assert set(body) == {"text", "blocks"}  # what a Slack incoming webhook takes
        assert "Teapots <&> co completed with errors" in body["text"]
        assert "1 succeeded, 1 failed, 0 cancelled of 2" in body["text"]
        assert f"http://127.0.0.1:8501/job?job_id={job['id']}" in body["text"]
        section = body["blocks"][0]["text"]["text"]
        assert "Teapots &lt;&amp;&gt; co" in section and "|Open the job>" in section
        assert {r.headers["X-Idempotency-Key"] for r in receiver.received} == {
            receiver.received[0].headers["X-Idempotency-Key"]}
        wait_for(lambda: _notes(worker, job["id"])[0]["status"] == "sent", timeout_s=10)
        note = _notes(worker, job["id"])[0]
        assert note["attempts"] == 3
        worker.stop()  # the sender restarts: nothing is sent again
        worker.start()
        time.sleep(1.5)
        assert len(receiver.received) == 3
        logs = worker.logs()
        assert "webhook_sent" in logs and "s3cr3tpath" not in logs


def test_default_webhook_exactly_once_with_two_senders_and_a_restart(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    with WebhookReceiver() as receiver:
        first = start_worker(**FAST, JOB_WEBHOOK_URL=receiver.url)
        second = start_worker(**FAST, JOB_WEBHOOK_URL=receiver.url, RUN_DISPATCHER="false")
        jobs = [submit(first, [f"p{i}-{n}" for n in range(3)]) for i in range(4)]
        for job in jobs:
            wait_done(first, job["id"])
        wait_for(lambda: len(receiver.received) >= 4, timeout_s=30, message="4 posts")
        second.stop()
        second.start()
        time.sleep(1.5)
        ids = sorted(r.body["blocks"][1]["elements"][0]["text"].split()[1]
                     for r in receiver.received)
        assert ids == sorted(j["id"] for j in jobs)  # one message per job, no repeat


def test_job_without_any_webhook_is_skipped_not_retried(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(**FAST)
    job = submit(worker, ["one"])
    wait_done(worker, job["id"])
    wait_for(lambda: _notes(worker, job["id"]) and
             _notes(worker, job["id"])[0]["status"] == "skipped", timeout_s=10)
