"""The Cloud Tasks path against gcloud-tasks-emulator (PyPI, its own venv: see
scripts/test-deps.d/20-cloud-tasks-emulator.sh) with the real google-cloud-tasks client
over an insecure gRPC channel, delivering to a real worker process on loopback.

The emulator neither deduplicates task names nor sends OIDC tokens: those two are tested
against testing/cloudtasks_fake.py (test_cloud_tasks_fake.py). The emulator and
``cloud_env`` are tests/support/cloud_tasks.py's fixtures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from cli.main import main as cli
from core.config import Settings
from core.dispatch import EnqueueResult, TaskRef
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from core.jobs import lifecycle
from core.jobs.validation import BatchSpec
from testing.openai_stub import OpenAIStub, Reply
from tests.conftest import WorkerProcess, wait_for
from tests.support.cloud_tasks import worker_on_port
from tests.support.worker_api import submit


@pytest.fixture
def cloud_worker(cloud_env: dict[str, str], settings: Settings, tmp_path: Path
                 ) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker on the port WORKER_URL names (the emulator POSTs there), after
    creating the queue with the CLI."""
    assert cli(["queue", "create"]) == 0
    started: list[WorkerProcess] = []

    def _start(**overrides: str) -> WorkerProcess:
        worker = worker_on_port({**cloud_env, **overrides}, tmp_path,
                                   log_name=f"worker-{len(started)}.log")
        started.append(worker)
        return worker.start()

    yield _start
    for worker in started:
        worker.stop()


def _tasks(engine: Engine, job_id: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, prompt, status, attempts, cloud_task_name, dispatch_generation "
            "FROM generation_tasks WHERE job_id = :j ORDER BY prompt_index"), {"j": job_id}))


def _wait_job(engine: Engine, job_id: Any, timeout_s: float = 60) -> str:
    def done() -> str | None:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM generation_jobs WHERE id = :j"),
                                  {"j": job_id}).scalar_one()
        return status if status in ("completed", "completed_with_errors", "failed") else None

    return str(wait_for(done, timeout_s=timeout_s, interval_s=0.2, message="the job"))


def test_batch_is_delivered_by_the_emulator_and_completes(
    cloud_worker: Callable[..., WorkerProcess], engine: Engine, settings: Settings,
) -> None:
    worker = cloud_worker()
    job_id = submit(worker, ["a teapot", "a kite", "a fern"], count_per_prompt=2)["id"]
    assert _wait_job(engine, job_id) == "completed"
    rows = _tasks(engine, job_id)
    assert [r.status for r in rows] == ["succeeded"] * 6
    assert all(r.attempts == 1 for r in rows)
    # Each row records its hash-like Cloud Tasks name, under the configured queue.
    queue_path = (f"projects/test-project/locations/us-central1/queues/"
                  f"{settings.QUEUE_NAME}/tasks/")
    assert all(r.cloud_task_name.startswith(queue_path) for r in rows)
    assert len({r.cloud_task_name for r in rows}) == 6
    # The worker read the X-CloudTasks-* headers of the deliveries.
    assert "cloud_task_name" in worker.logs()


def test_a_worker_answering_503_is_retried_until_it_succeeds(
    cloud_worker: Callable[..., WorkerProcess], engine: Engine, settings: Settings,
) -> None:
    with OpenAIStub() as stub:
        # The provider is down for three tries: each becomes a new Cloud Task of the next
        # generation, scheduled at the row's next attempt (core/dispatch/cloudtasks/handover.py;
        # this emulator release keeps a task with a future schedule_time back until then).
        stub.on_prompt("a storm", *[Reply.server_error(503)] * 3, Reply.ok())
        cloud_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                     OPENAI_API_KEY=stub.api_key)
        settings_openai = settings.model_copy(update={"IMAGE_PROVIDER": "openai"})
        job = lifecycle.submit_batch(BatchSpec(prompts=("a storm",), style="none",
                                          count_per_prompt=1),
                                options=lifecycle.options_for(settings_openai),
                                settings=settings)
        assert _wait_job(engine, job.id) == "completed"
        assert [c.status for c in stub.calls_for("a storm")] == [503, 503, 503, 200]
    (row,) = _tasks(engine, job.id)
    assert (row.status, row.attempts) == ("succeeded", 4)
    assert row.dispatch_generation == 3


class _CutOff:
    """A dispatcher that hands over the first ``n`` tasks, then dies (a crashed submit)."""

    name = "cut_off"

    def __init__(self, inner: CloudTasksDispatcher, n: int) -> None:
        self.inner, self.n = inner, n

    def enqueue(self, tasks: list[TaskRef]) -> EnqueueResult:
        self.inner.enqueue(tasks[: self.n])
        raise ConnectionError("process died half way through the hand-over")

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def is_paused(self) -> bool:
        return False


def test_sweeper_finishes_a_batch_whose_enqueue_was_cut_off(
    cloud_worker: Callable[..., WorkerProcess], engine: Engine, settings: Settings,
) -> None:
    cloud_worker()
    real = CloudTasksDispatcher.from_settings(settings)
    try:
        job = lifecycle.submit_batch(BatchSpec(prompts=tuple(f"shell {i}" for i in range(10)),
                                          style="none", count_per_prompt=1),
                                dispatcher=_CutOff(real, 4), settings=settings)
        wait_for(lambda: sum(r.status == "succeeded" for r in _tasks(engine, job.id)) == 4,
                 timeout_s=30, message="the handed-over half")
        time.sleep(0.5)  # nothing else may arrive: the rest was never enqueued
        assert [r.status for r in _tasks(engine, job.id)].count("pending") == 6
        assert cli(["sweep", "--grace-s", "0"]) == 0
        assert _wait_job(engine, job.id) == "completed"
    finally:
        real.close()
    assert all(r.attempts == 1 for r in _tasks(engine, job.id))


def test_enqueueing_the_same_task_twice_runs_it_once(
    cloud_worker: Callable[..., WorkerProcess], engine: Engine, settings: Settings,
) -> None:
    # The emulator accepts the repeated name (Cloud Tasks would refuse it; see the fake
    # server test), so it delivers twice: the worker's claim makes the second a no-op.
    with OpenAIStub() as stub:
        worker = cloud_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                              OPENAI_API_KEY=stub.api_key)
        settings_openai = settings.model_copy(update={"IMAGE_PROVIDER": "openai"})
        real = CloudTasksDispatcher.from_settings(settings)
        try:
            job = lifecycle.submit_batch(BatchSpec(prompts=("a single swan",), style="none",
                                              count_per_prompt=1),
                                    options=lifecycle.options_for(settings_openai),
                                    dispatcher=_CutOff(real, 0), settings=settings)
            (row,) = _tasks(engine, job.id)
            ref = TaskRef(row.id, row.dispatch_generation)
            first, second = real.enqueue([ref]), real.enqueue([ref])
        finally:
            real.close()
        assert (first.enqueued, second.failed) == (1, 0)
        assert _wait_job(engine, job.id) == "completed"
        # The emulator delivers the second copy; the worker answers it as a duplicate.
        wait_for(lambda: '"outcome": "duplicate"' in worker.logs(), timeout_s=20,
                 message="the second delivery")
        assert len(stub.calls_for("a single swan")) == 1
    (row,) = _tasks(engine, job.id)
    assert (row.status, row.attempts) == ("succeeded", 1)
