"""Benchmark 3, submit: a 10,000-prompt batch accepted (job and tasks committed, handed to
the local queue) through the HTTP API, and 1,000 tasks enqueued to the Cloud Tasks
emulator with the dispatcher's bounded concurrent CreateTask calls vs one at a time.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
from sqlalchemy import text

from bench.common import (
    REPO_ROOT,
    Figure,
    base_env,
    bench_database,
    figure,
    free_port,
    load_note,
    running_worker,
    sync_engine,
    workdir,
)

N_PROMPTS = 10_000
SUBMIT_RUNS = 3
N_ENQUEUE = 1000
EMULATOR_PYTHON = REPO_ROOT / ".venv-emulator" / "bin" / "python"
_RUN_EMULATOR = ("import sys; from gcloud_tasks_emulator.__main__ import run_server; "
                 "run_server('127.0.0.1', int(sys.argv[1]), 'localhost', 80, [], -1)")


def submit_latency() -> list[float]:
    prompts = [f"a lighthouse at dusk, variation {i}, watercolour" for i in range(N_PROMPTS)]
    times: list[float] = []
    with bench_database("submit") as url, workdir("submit") as tmp:
        env = {**base_env(url, tmp), "RUN_DISPATCHER": "false"}
        with running_worker(env, tmp / "worker.log") as worker, httpx.Client(
                timeout=60) as client:
            for _ in range(SUBMIT_RUNS):
                started = time.perf_counter()
                response = client.post(worker.url + "/api/admin/generate/batch", json={
                    "prompts": prompts, "style": "none", "count_per_prompt": 1})
                times.append(time.perf_counter() - started)
                response.raise_for_status()
                assert response.json()["total_tasks"] == N_PROMPTS
    return times


@contextlib.contextmanager
def _emulator() -> Iterator[str | None]:
    if not EMULATOR_PYTHON.exists():
        yield None
        return
    port = free_port()
    proc = subprocess.Popen([str(EMULATOR_PYTHON), "-W", "ignore", "-c", _RUN_EMULATOR,
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cloud_tasks_enqueue() -> dict[str, float] | None:
    from core.config import Settings
    from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher, make_client

    rates: dict[str, float] = {}
    with _emulator() as host:
        if host is None:
            return None
        with bench_database("enqueue") as url:
            settings = Settings(ENVIRONMENT="test", USE_CLOUD_TASKS=True,
                                GCP_PROJECT="bench", QUEUE_NAME="bench-images",
                                CLOUD_TASKS_EMULATOR_HOST=host,
                                WORKER_URL=f"http://127.0.0.1:{free_port()}",
                                DATABASE_URL=url)  # type: ignore[arg-type]
            engine = sync_engine(url)
            try:
                for label, concurrency in (("concurrent", 50), ("sequential", 1)):
                    client = make_client(settings)  # close() below closes its channel
                    dispatcher = CloudTasksDispatcher(settings, client, engine,
                                                      concurrency=concurrency)
                    if label == "concurrent":
                        dispatcher.create_queue()
                        # Paused: the emulator would otherwise try to deliver every task to
                        # a worker that is not there, and retry 10 times a second.
                        client.pause_queue(name=dispatcher.queue_path)
                    refs = _pending_tasks(engine, N_ENQUEUE)
                    started = time.perf_counter()
                    result = dispatcher.enqueue(refs)
                    elapsed = time.perf_counter() - started
                    dispatcher.close()
                    if result.enqueued != N_ENQUEUE:
                        raise RuntimeError(f"{label}: {result}")
                    rates[label] = N_ENQUEUE / elapsed
            finally:
                engine.dispose()
    return rates


def _pending_tasks(engine, n: int) -> list:  # type: ignore[no-untyped-def,type-arg]
    from core.dispatch.base import TaskRef

    job_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO generation_jobs (id, status, total_tasks, style, count_per_prompt, "
            "provider, model, size, quality) VALUES (:id, 'pending', :n, 'none', 1, 'demo', "
            "'demo', '1024x1024', 'low')"), {"id": job_id, "n": n})
        ids = conn.execute(text(
            "INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, "
            "style, status) SELECT gen_random_uuid(), :id, g, 0, 'p', 'none', 'pending' "
            "FROM generate_series(0, :n - 1) g RETURNING id"), {"id": job_id, "n": n}
        ).scalars().all()
    return [TaskRef(i, 0) for i in ids]


def run() -> list[Figure]:
    times = submit_latency()
    figs = [figure(f"submit {N_PROMPTS:,} prompts over HTTP (median of {SUBMIT_RUNS})",
                   statistics.median(times), "s", goal="< 1 s", check=lambda v: v < 1.0,
                   note=f"runs {', '.join(f'{t:.2f}' for t in times)} s; {load_note()}")]
    try:
        rates = cloud_tasks_enqueue()
    except Exception as exc:  # the emulator is a test peer: report, do not crash the run
        rates = None
        print(f"cloud tasks enqueue not measured: {type(exc).__name__}: {exc}")
    note = "" if rates else "emulator not installed (scripts/test-deps.d/20-...)"
    figs.append(figure("Cloud Tasks emulator enqueue, 50 concurrent CreateTask",
                       rates["concurrent"] if rates else None, "tasks/s", note=note))
    figs.append(figure("Cloud Tasks emulator enqueue, sequential",
                       rates["sequential"] if rates else None, "tasks/s", note=note))
    return figs


if __name__ == "__main__":
    run()
