"""The whole local path against a running worker process: the guide's curl flow, big
batches, transient and permanent failures, duplicate deliveries, a killed worker."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess, wait_for
from tests.support.worker_api import job_status, submit, wait_done


def assert_counters_match_rows(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT status, count(*) FROM generation_tasks WHERE job_id = :j GROUP BY status"),
            {"j": job_id}).all())
        job = conn.execute(text("SELECT completed_tasks, failed_tasks, cancelled_tasks, "
                                "total_tasks FROM generation_jobs WHERE id = :j"),
                           {"j": job_id}).one()
    assert job.completed_tasks == rows.get("succeeded", 0)
    assert job.failed_tasks == rows.get("failed", 0)
    assert job.cancelled_tasks == rows.get("cancelled", 0)
    assert job.total_tasks == sum(rows.values())
    return rows


def test_guide_curl_flow(start_worker: Callable[..., WorkerProcess], engine: Engine,
                         tmp_path: Path) -> None:
    worker = start_worker()
    job = submit(worker, ["a red leather armchair", "a brass desk lamp"],
                  style="product_photography")
    assert set(job) == {"id", "status", "total_tasks", "completed_tasks", "failed_tasks"}
    assert (job["status"], job["total_tasks"]) == ("pending", 2)
    done = wait_done(worker, job["id"])
    assert done == {"id": job["id"], "status": "completed", "total_tasks": 2,
                    "completed_tasks": 2, "failed_tasks": 0, "progress_percentage": 100.0}
    job_dir = tmp_path / "images" / job["id"]
    assert len(list(job_dir.glob("*.png"))) == 2
    assert len(list((job_dir / "thumbs").glob("*.webp"))) == 2
    tasks = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks", timeout=10).json()
    image = httpx.get(worker.url + "/images/" + tasks["tasks"][0]["image_path"], timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@pytest.mark.slow
def test_200_prompts_with_20_percent_transient_failures_all_succeed(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    # 0.2^10 per task: a task failing every one of its attempts would take ~10^7 batches.
    worker = start_worker(DEMO_TRANSIENT_FAILURE_RATE="0.2", MAX_ATTEMPTS="10",
                          LOCAL_MAX_CONCURRENCY="10", DEMO_IMAGE_PX="64")
    job = submit(worker, [f"prompt number {i}" for i in range(200)])
    done = wait_done(worker, job["id"], timeout_s=120)
    assert (done["status"], done["completed_tasks"], done["failed_tasks"]) == ("completed", 200, 0)
    assert assert_counters_match_rows(engine, job["id"]) == {"succeeded": 200}
    with engine.connect() as conn:
        retried = conn.execute(text("SELECT count(*) FROM generation_tasks WHERE job_id=:j "
                                    "AND attempts > 1"), {"j": job["id"]}).scalar()
    assert retried > 10  # the failures really happened and were retried


def test_permanent_failures_carry_code_and_message(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    worker = start_worker(MAX_ATTEMPTS="3")
    prompts = ["a fine cat", "blocked [[demo:moderation_blocked]]", "a fine dog",
               "always down [[demo:server_error]]"]
    job = submit(worker, prompts)
    done = wait_done(worker, job["id"])
    assert (done["status"], done["completed_tasks"], done["failed_tasks"]) == (
        "completed_with_errors", 2, 2)
    failed = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks?status=failed",
                       timeout=10).json()["tasks"]
    by_prompt = {t["prompt"]: t for t in failed}
    blocked = by_prompt["blocked [[demo:moderation_blocked]]"]
    assert (blocked["last_error_code"], blocked["attempts"]) == ("moderation_blocked", 1)
    assert "refused" in blocked["last_error"]
    down = by_prompt["always down [[demo:server_error]]"]
    assert (down["last_error_code"], down["attempts"]) == ("upstream_error", 3)
    assert_counters_match_rows(engine, job["id"])


def test_duplicate_concurrent_deliveries_move_counters_once(
    start_worker: Callable[..., WorkerProcess], engine: Engine
) -> None:
    worker = start_worker(RUN_DISPATCHER="false", DEMO_LATENCY_MS="300")
    job = submit(worker, ["one picture"])
    with engine.connect() as conn:
        task_id = str(conn.execute(text("SELECT id FROM generation_tasks WHERE job_id=:j"),
                                   {"j": job["id"]}).scalar())
    url = worker.url + "/api/admin/worker/process-task"

    def deliver(_: int) -> tuple[int, str]:
        r = httpx.post(url, json={"task_id": task_id}, timeout=30)
        return r.status_code, r.json()["outcome"]

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(deliver, range(5)))
    assert answers.count((200, "succeeded")) == 1
    # the others arrived during the live lease (503, retry later) or after the end (200)
    assert all(a in {(503, "busy"), (200, "duplicate")} for a in answers if a[1] != "succeeded")
    assert deliver(0) == (200, "duplicate")
    done = job_status(worker, job["id"])
    assert (done["status"], done["completed_tasks"]) == ("completed", 1)
    assert assert_counters_match_rows(engine, job["id"]) == {"succeeded": 1}


def test_killed_worker_restarts_and_finishes_without_loss_or_duplicates(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    # Short deadline and lease so deliveries cut by the kill come back within seconds.
    worker = start_worker(DEMO_LATENCY_MS="150", DISPATCH_DEADLINE_S="2", TASK_LEASE_S="3",
                          LOCAL_MAX_CONCURRENCY="5")
    job = submit(worker, [f"picture {i}" for i in range(120)])

    def running_now() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM generation_tasks WHERE job_id = :j AND "
                "status = 'running'"), {"j": job["id"]}).scalar() or 0)

    def mid_batch() -> bool:
        # Progress first, the running count last: the kill follows that read directly,
        # so a slow status answer cannot let the deliveries it saw finish meanwhile.
        return (job_status(worker, job["id"])["completed_tasks"] >= 10
                and running_now() >= 3)

    # Killed with deliveries in flight; a loaded machine has moments with none running
    # between the read and the kill, so a kill that cut nothing is tried again.
    in_flight = 0
    for _ in range(3):
        wait_for(mid_batch, timeout_s=60, interval_s=0.02,
                 message="progress, deliveries in flight")
        worker.kill()
        in_flight = running_now()
        time.sleep(0.5)
        worker.start()
        if in_flight:
            break
    done = wait_done(worker, job["id"], timeout_s=90)
    assert (done["status"], done["completed_tasks"]) == ("completed", 120)
    assert assert_counters_match_rows(engine, job["id"]) == {"succeeded": 120}
    images = list((tmp_path / "images" / job["id"]).glob("*.png"))
    assert len(images) == 120  # one object per task: a redelivery overwrote, never added
    # The kill really cut deliveries in flight (5 in flight at 150 ms each when it came).
    assert in_flight >= 1
    print(f"tasks running at kill time: {in_flight}")
