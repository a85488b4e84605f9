"""Cloud Tasks recovery with the product's DEFAULT settings, against
testing/cloudtasks_fake.py (Cloud Tasks' retry semantics), with the queue created both
ways: as ``aiwebimage queue create`` makes it, and as the deployment guide's
``gcloud tasks queues create --max-dispatches-per-second --max-concurrent-dispatches``
makes it (Cloud Tasks' default retry config: 100 attempts, 0.1-3600 s, 16 doublings).

No timing is shortened: the conftest's quick retry/deadline settings are removed, so the
lease, retry, sweep and stranded settings are the defaults a deployment gets. The figures
are printed (``-s``); the asserted bounds are the issue's.

- a worker SIGKILLed 1 s into a delivery (a Cloud Run instance dying), a new one started
  at the same URL: the task succeeds <= 90 s later, without the stranded sweep;
- a 5-minute provider outage (the OpenAI stub answering 429 with Retry-After: 60): 0 tasks
  dropped by the queue, no task failed, every retry at least 60 s after the 429.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher, queue_config
from testing.cloudtasks_fake import ADMIN, CloudTasksFake, TestIdentity, gcloud_queue
from testing.openai_stub import OpenAIStub, Reply
from tests.conftest import WorkerProcess, wait_for
from tests.support.cloud_tasks import create_queue, production_env, worker_on_port
from tests.support.worker_api import submit

pytestmark = pytest.mark.defaults

# The conftest shortens these for speed; the product's defaults apply here.
SHORTENED = ("RETRY_MIN_BACKOFF_S", "RETRY_MAX_BACKOFF_S", "DISPATCH_DEADLINE_S",
             "DISPATCH_POLL_S")
KILL_BOUND_S = 90.0
OUTAGE_S = 300.0
RETRY_AFTER_S = 60.0


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(latency_s=0.2) as server:
        yield server


@pytest.fixture(autouse=True)
def _defaults(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings fixture exported the shortened values to this process's environment,
    which worker processes inherit: take them out again."""
    for name in SHORTENED:
        monkeypatch.delenv(name, raising=False)


def _worker_env(env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity,
                stub: OpenAIStub, queue: str) -> dict[str, str]:
    values = production_env({k: v for k, v in env.items() if k not in SHORTENED}, fake,
                            identity, queue_name=queue)
    values.update(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                  OPENAI_API_KEY=stub.api_key,
                  # As on Cloud Run: a new instance is a new lease owner, so nothing frees
                  # the dead one's rows at boot; the lease and the queue must.
                  K_SERVICE="aiwebimage-worker")
    return values


def _create_queue(worker_env: dict[str, str], how: str) -> None:
    settings = Settings(**{k: v for k, v in worker_env.items()
                           if k in Settings.model_fields})  # type: ignore[arg-type]
    dispatcher = CloudTasksDispatcher.from_settings(settings)
    try:
        if how == "cli":  # what `aiwebimage queue create` sends
            queue = queue_config(settings, dispatcher.queue_path)
        else:  # the guide's gcloud command: rate and concurrency flags only
            queue = gcloud_queue(dispatcher.queue_path, max_dispatches_per_second=10,
                                 max_concurrent_dispatches=100)
        create_queue(dispatcher, queue)
    finally:
        dispatcher.close()


def _submit(worker: WorkerProcess, prompts: list[str]) -> str:
    return str(submit(worker, prompts, headers=ADMIN)["id"])


def _rows(engine: Engine, job_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, prompt, status, attempts, dispatch_generation, cloud_task_name, "
            "last_error_code, started_at FROM generation_tasks WHERE job_id = :j "
            "ORDER BY prompt_index"), {"j": job_id}))


def _task_of(fake: CloudTasksFake, delivery: Any) -> str:
    return str(json.loads(fake.created[delivery.task_name].http_request.body)["task_id"])


@pytest.mark.parametrize(("how", "restart_after_s"), [
    ("cli", 0.0), ("gcloud", 0.0),
    # No instance for 40 s: the lease has expired before anyone is there, the queue's
    # retries are spread out, and the new instance's expired-lease check is the bound.
    ("gcloud", 40.0)])
def test_worker_killed_one_second_into_a_delivery_recovers_within_90_s(
    how: str, restart_after_s: float, env: dict[str, str], settings: Settings, fake: CloudTasksFake,
    identity: TestIdentity, stub: OpenAIStub, engine: Engine, tmp_path: Path,
) -> None:
    worker_env = _worker_env(env, fake, identity, stub, f"kill-{how}")
    _create_queue(worker_env, how)
    stub.on_prompt("a slow lighthouse", Reply.hang(seconds=30))  # the delivery to cut
    first = worker_on_port(worker_env, tmp_path, "first.log").start()
    job_id = _submit(first, ["a slow lighthouse", "a quick gull"])
    wait_for(lambda: (rows := _rows(engine, job_id))[0].status == "running"
                         and rows, timeout_s=30, interval_s=0.05, message="the delivery")
    time.sleep(1.0)
    first.kill()
    killed_at = time.time()
    time.sleep(restart_after_s)
    # Cloud Run starting a new instance behind the same URL
    second = worker_on_port(worker_env, tmp_path, "second.log").start()
    try:
        def done() -> list[Any] | None:
            rows = _rows(engine, job_id)
            return rows if all(r.status in ("succeeded", "failed") for r in rows) else None

        rows = wait_for(done, timeout_s=KILL_BOUND_S + 60, interval_s=0.2,
                        message="the job after the kill")
        recovered_s = time.time() - killed_at
        logs = second.logs()
    finally:
        second.stop()
    print(f"\n[defaults] queue created by {how}: worker SIGKILLed 1 s into a delivery, "
          f"new instance {restart_after_s:g} s later; task succeeded {recovered_s:.1f} s "
          f"after the kill (bound {KILL_BOUND_S:g} s); "
          f"attempts {rows[0].attempts}, generation {rows[0].dispatch_generation}")
    assert {r.status for r in rows} == {"succeeded"}
    assert recovered_s <= KILL_BOUND_S
    assert fake.dropped == []
    assert '"stranded_requeue"' not in logs  # recovered without the stranded sweep
    # The interrupted task called the model twice (the cut call and the one that
    # succeeded); the other once.
    assert [c.status for c in stub.calls_for("a slow lighthouse")][-1] == 200
    assert len(stub.calls_for("a quick gull")) == 1


@pytest.mark.timeout(OUTAGE_S + 4 * RETRY_AFTER_S + 120)
def test_five_minute_provider_outage_drops_nothing_and_honours_retry_after(
    env: dict[str, str], settings: Settings, fake: CloudTasksFake, identity: TestIdentity,
    stub: OpenAIStub, engine: Engine, tmp_path: Path,
) -> None:
    # Both queues in the same outage: one worker each (their own queue and URL), one
    # provider, so the five minutes are paid once.
    stub.default = Reply.rate_limited(retry_after_s=RETRY_AFTER_S)
    workers: dict[str, WorkerProcess] = {}
    jobs: dict[str, str] = {}
    started = time.monotonic()
    try:
        for how in ("cli", "gcloud"):
            worker_env = _worker_env(env, fake, identity, stub, f"outage-{how}")
            _create_queue(worker_env, how)
            workers[how] = worker_on_port(worker_env, tmp_path, f"{how}.log").start()
            jobs[how] = _submit(workers[how], [f"{how} tile {i}" for i in range(5)])
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
        stub.default = Reply.ok()
        ended = time.monotonic()

        def done() -> dict[str, list[Any]] | None:
            rows = {how: _rows(engine, job) for how, job in jobs.items()}
            finished = all(r.status in ("succeeded", "failed")
                           for rs in rows.values() for r in rs)
            return rows if finished else None

        rows = wait_for(done, timeout_s=RETRY_AFTER_S * 3, interval_s=0.5,
                        message="the jobs after the outage")
        after_s = time.monotonic() - ended
        logs = {how: w.logs() for how, w in workers.items()}
    finally:
        for worker in workers.values():
            worker.stop()
    for how, task_rows in rows.items():
        gaps = []
        for row in task_rows:
            calls = stub.calls_for(row.prompt)
            assert calls[-1].status == 200, (how, row.prompt)
            assert all(c.status == 429 for c in calls[:-1])
            gaps += [b.at_s - a.at_s for a, b in itertools.pairwise(calls)]
        # Deliveries: after a delivery whose model call met a 429, the task's next
        # delivery (its next generation's Cloud Task) starts at least Retry-After later.
        wall = time.time() - time.monotonic()  # the stub stamps calls with monotonic time
        delivery_gaps = []
        for row in task_rows:
            starts = sorted(d.started_at for d in fake.deliveries
                            if _task_of(fake, d) == str(row.id))
            for call in stub.calls_for(row.prompt):
                if call.status != 429:
                    continue
                later = [t for t in starts if t > call.at_s + wall]
                if later:
                    delivery_gaps.append(later[0] - (call.at_s + wall))
        print(f"\n[defaults] queue created by {how}: {OUTAGE_S:g} s outage (429, Retry-After "
              f"{RETRY_AFTER_S:g}): {sum(r.status == 'succeeded' for r in task_rows)}/"
              f"{len(task_rows)} succeeded, done {after_s:.1f} s after it ended; model calls "
              f"per task {[len(stub.calls_for(r.prompt)) for r in task_rows]}; shortest gap "
              f"between calls {min(gaps):.1f} s, from a 429 to the next delivery "
              f"{min(delivery_gaps):.1f} s; dropped by the queue {len(fake.dropped)}")
        assert {r.status for r in task_rows} == {"succeeded"}, how
        assert min(gaps) >= RETRY_AFTER_S - 0.5, how
        assert min(delivery_gaps) >= RETRY_AFTER_S - 1.0, how
        assert '"process_task_failed"' not in logs[how]
    assert fake.dropped == []
    for how, log_text in logs.items():
        line = next(json.loads(x) for x in log_text.splitlines() if '"queue_config"' in x)
        print(f"[defaults] {how}: {line['severity']}: {line['message']}")
        # The workers ran with the defaults (the queue the CLI made says so).
        expected = "backoff 1\u2013300 s" if how == "cli" else "backoff 0.1\u20133600 s"
        assert expected in line["message"]
