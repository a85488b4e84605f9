"""Benchmark: fair share and priority (docs/order-of-work.md), locally and through the
Cloud Tasks fake.

One worker per set-up (demo model, DEMO_LATENCY_MS=1000, 25 deliveries at once: the local
dispatcher's LOCAL_MAX_CONCURRENCY, or the fake queue's max_concurrent_dispatches with a
CLOUD_TASKS_WINDOW of 30). In one run, to keep it to a few minutes:

1. a 100-image job alone: its time T_alone;
2. a 5,000-image job, and once it runs at full speed a 100-image job (normal priority): its
   time T_fair; then another 100-image job with priority high: T_high;
3. the big job alone again for a while: its rate alone; then it is cancelled.

Figures: T_fair / T_alone (goal <= 2.2: fair share gives it about half the slots),
T_high / T_alone (goal <= 1.3: it only waits for slots to free), and the big job's delay,
elapsed time minus what its completed images take at its rate alone (and one model
latency, which it pays alone too), against the small
jobs' work (their images / the rate alone): goal <= 1.0 (work-conserving: the big job
loses no more than the slots the small ones used). The big job is not run to its end
(200 s at this rate); its delay is what its makespan grows by.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import httpx
from sqlalchemy import text

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    free_port,
    job_row,
    load_note,
    running_worker,
    sync_engine,
    workdir,
)

BIG, SMALL, SLOTS, LATENCY_MS = 5000, 100, 25, 1000
WINDOW = 30
ADMIN_KEY = "bench-admin-key-0123456789"
WARM_S = 4.0  # the big job at full speed before the small one arrives
ALONE_S = 20.0  # the big job alone again, for its rate (20 s: +-1 image is 0.2 %)


def _submit(url: str, n: int, tag: str, priority: str = "normal") -> str:
    response = httpx.post(url + "/api/admin/generate/batch", timeout=120,
                          headers={"X-API-Key": ADMIN_KEY},
                          json={"prompts": [f"{tag} {i}" for i in range(n)],
                                "priority": priority})
    response.raise_for_status()
    return str(response.json()["id"])


def _run_small(engine: Any, url: str, tag: str, priority: str = "normal") -> float:
    job_id = _submit(url, SMALL, tag, priority)
    started = time.monotonic()
    while job_row(engine, job_id).finished_at is None:
        if time.monotonic() - started > 300:
            raise RuntimeError(f"{tag} did not finish in 300 s")
        time.sleep(0.05)
    return time.monotonic() - started


def _done(engine: Any, job_id: str) -> int:
    return int(job_row(engine, job_id).completed_tasks)


def _scenario(engine: Any, url: str) -> dict[str, float]:
    alone = _run_small(engine, url, "alone")
    big = _submit(url, BIG, "big")
    big_started = time.monotonic()
    time.sleep(WARM_S)
    fair = _run_small(engine, url, "fair")
    high = _run_small(engine, url, "high", priority="high")
    mark_done, mark_t = _done(engine, big), time.monotonic()
    time.sleep(ALONE_S)
    end_done, end_t = _done(engine, big), time.monotonic()
    rate = (end_done - mark_done) / (end_t - mark_t)  # big job's images/s alone
    httpx.post(f"{url}/api/admin/jobs/{big}/cancel", headers={"X-API-Key": ADMIN_KEY},
               timeout=60)
    # What the big job's completed images take at its rate alone, from its start; an image
    # completes one model latency after it starts, which the job alone pays too (its
    # makespan alone is images / rate + one latency), so that latency is not a delay.
    delay = ((end_t - big_started) - end_done / rate - LATENCY_MS / 1000 if rate > 0
             else float("nan"))
    small_work = 2 * SMALL / rate if rate > 0 else float("nan")
    return {"alone": alone, "fair": fair, "high": high, "rate": rate, "delay": delay,
            "small_work": small_work}


def _local() -> dict[str, float]:
    with bench_database("fair_local") as url, workdir("fair-local") as tmp:
        env = {**base_env(url, tmp), "API_KEY": ADMIN_KEY, "DEMO_LATENCY_MS": str(LATENCY_MS),
               "LOCAL_MAX_CONCURRENCY": str(SLOTS), "ADAPTIVE_CONCURRENCY": "false"}
        engine = sync_engine(url)
        try:
            with running_worker(env, tmp / "worker.log") as worker:
                worker_env_url = worker.url
                return _scenario(engine, worker_env_url)
        finally:
            engine.dispose()


def _cloud_tasks() -> dict[str, float]:
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    from testing.cloudtasks_fake import (
        CloudTasksFake,
        TestIdentity,
        gcloud_queue,
        production_worker_env,
    )

    with ExitStack() as stack:
        identity = TestIdentity()
        stack.callback(identity.stop)
        fake = stack.enter_context(CloudTasksFake(identity))
        certs_url = identity.serve()
        url = stack.enter_context(bench_database("fair_ct"))
        tmp = stack.enter_context(workdir("fair-ct"))
        port = free_port()
        env = {**base_env(url, tmp),
               **production_worker_env(port=port, tasks_host=fake.host, certs_url=certs_url),
               "API_KEY": ADMIN_KEY, "DEMO_LATENCY_MS": str(LATENCY_MS),
               "CLOUD_TASKS_WINDOW": str(WINDOW), "ENVIRONMENT": "production"}
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
            channel=grpc.insecure_channel(fake.host)))
        parent = "projects/test-project/locations/us-central1"
        client.create_queue(parent=parent, queue=gcloud_queue(
            f"{parent}/queues/images", max_dispatches_per_second=500,
            max_concurrent_dispatches=SLOTS))
        engine = sync_engine(url)
        stack.callback(engine.dispose)
        from bench.common import Worker

        worker = Worker(env=env, log_path=tmp / "worker.log", port=port).start()
        stack.callback(worker.stop)
        result = _scenario(engine, worker.url)
        with engine.connect() as conn:
            result["failed"] = float(conn.execute(text(
                "SELECT count(*) FROM generation_tasks WHERE status = 'failed'")).scalar() or 0)
        return result


def run() -> list[Figure]:
    figs: list[Figure] = []
    for label, fn in (("local", _local), ("cloud_tasks", _cloud_tasks)):
        r = fn()
        note = (f"alone {r['alone']:.1f} s, fair {r['fair']:.1f} s, high {r['high']:.1f} s; "
                f"big job {r['rate']:.1f} img/s alone; {SLOTS} slots, {LATENCY_MS} ms; "
                f"{load_note()}")
        figs.append(figure(f"fairness [{label}] small job with a big one / alone",
                           r["fair"] / r["alone"], "x", goal="<= 2.2", note=note,
                           check=lambda v: v <= 2.2))
        figs.append(figure(f"fairness [{label}] small high-priority job / alone",
                           r["high"] / r["alone"], "x", goal="<= 1.3",
                           check=lambda v: v <= 1.3))
        figs.append(figure(f"fairness [{label}] big job's delay / small jobs' work",
                           r["delay"] / r["small_work"], "x", goal="<= 1.0",
                           note=f"delay {r['delay']:.1f} s, small jobs' work "
                                f"{r['small_work']:.1f} s",
                           check=lambda v: v <= 1.0))
    return figs


if __name__ == "__main__":
    run()
