"""Benchmark 6, cost: the worker's CPU per task with a full-size image, turned into Cloud
Run cost per 1,000 images by core.billing.cost_model, for concurrency 1 vs 80, beside the guide's
$4.24 (80 s per image on a 2 vCPU instance per task).

The provider is the OpenAI-compatible stub returning a 1024 x 1024 PNG (so decoding,
thumbnailing and storing cost what they cost for a real image), through the real openai
client, the task endpoint, local storage and PostgreSQL. CPU = user + system seconds of
the worker process over the batch (its in-process dispatcher included), per task.
"""

from __future__ import annotations

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    load_note,
    running_worker,
    submit,
    sync_engine,
    wait_finished,
    workdir,
)
from core.billing.cost_model import GUIDE_IMAGE_S, GUIDE_USD_PER_1000, comparison

N_TASKS = 300
CONCURRENCY = 16
IMAGE_PX = 1024


def cpu_per_task_s() -> float | None:
    from testing.openai_stub import OpenAIStub

    with OpenAIStub(latency_s=0.05, image_px=IMAGE_PX) as stub, \
            bench_database("cost") as url, workdir("cost") as tmp:
        env = {**base_env(url, tmp), "IMAGE_PROVIDER": "openai",
               "OPENAI_API_KEY": stub.api_key, "OPENAI_BASE_URL": stub.base_url,
               "LOCAL_MAX_CONCURRENCY": str(CONCURRENCY),
               # Production's log level: a JSON line per delivery is part of the cost.
               "LOG_LEVEL": "INFO"}
        engine = sync_engine(url)
        try:
            with running_worker(env, tmp / "worker.log") as worker:
                cpu0 = worker.cpu_s()
                job_id = submit(worker.url, [f"cost {i}" for i in range(N_TASKS)])
                row = wait_finished(engine, job_id, timeout_s=180)
                cpu_s = worker.cpu_s() - cpu0
        finally:
            engine.dispose()
    if row.completed_tasks != N_TASKS:
        return None
    return cpu_s / N_TASKS


def run() -> list[Figure]:
    cpu_s = cpu_per_task_s()
    figs = [figure(f"worker CPU per task ({IMAGE_PX} px image, end to end)",
                   cpu_s * 1000 if cpu_s else None, "ms",
                   note=f"{N_TASKS} tasks; {load_note()}")]
    if cpu_s is None:
        return figs
    for label, estimate in comparison(cpu_s, GUIDE_IMAGE_S).items():
        figs.append(figure(
            f"Cloud Run $ per 1,000 images, {label}", estimate.usd_per_1000, "USD",
            note=f"{GUIDE_IMAGE_S:.0f} s per image; {estimate.effective_concurrency:.0f} in "
                 f"flight, CPU {estimate.cpu_utilisation:.0%}; guide ${GUIDE_USD_PER_1000}"))
    _, high = comparison(cpu_s, GUIDE_IMAGE_S).values()
    figs.append(figure("cost at concurrency 80 vs the guide's estimate",
                       high.usd_per_1000 / GUIDE_USD_PER_1000, "x", goal="< 1 (cheaper)",
                       check=lambda v: v < 1))
    return figs


if __name__ == "__main__":
    run()
