"""Batch mode: the worker's peak memory while it ingests a Batch API output file of 500
images of 1024x1024, and how fast it does.

The stub's output file carries the same realistic PNG on every line: 1024x1024 RGB with
noise (barely compressible, about what a detailed GPT image weighs), base64-encoded as the
API sends it, so the file is ~2 GB streamed. A real ``python -m worker`` (with its local
batch poller) downloads it line by line, stores each image and thumbnail and completes
each task. Its peak resident memory (VmHWM, from /proc) must stay <= 150 MB: the file is
never held whole. The ingest rate is what BATCH_CHUNK_SIZE is chosen from
(docs/batch-mode.md).
"""

from __future__ import annotations

import io
import random
import threading
import time
from pathlib import Path

import httpx

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    load_note,
    running_worker,
    sync_engine,
    wait_finished,
    workdir,
)

N_IMAGES = 500
SIDE_PX = 1024
GOAL_MB = 150.0


def realistic_png(side: int = SIDE_PX, seed: int = 7) -> bytes:
    """A 1024x1024 PNG that compresses like a detailed picture, not like a flat colour."""
    from PIL import Image

    rng = random.Random(seed)
    # Noise at a quarter of the resolution, scaled up: detail that PNG cannot squeeze to
    # nothing, at roughly the size of a real high-quality output (a few MB).
    small = Image.frombytes("RGB", (side // 2, side // 2), rng.randbytes(side * side * 3 // 4))
    out = io.BytesIO()
    small.resize((side, side), Image.Resampling.BILINEAR).save(out, format="PNG")
    return out.getvalue()


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def run() -> list[Figure]:
    from testing.openai_stub import OpenAIStub

    png = realistic_png()
    with bench_database("batch_ingest") as url, workdir("batch-ingest") as tmp, \
            OpenAIStub() as stub:
        stub.batches.image = png
        env = {**base_env(url, tmp), "IMAGE_PROVIDER": "openai",
               "OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": stub.api_key,
               "OPENAI_TIMEOUT_S": "120", "BATCH_CHUNK_SIZE": str(N_IMAGES),
               "BATCH_POLL_S": "0.5", "DB_POOL_SIZE": "5"}
        engine = sync_engine(url)
        try:
            with running_worker(env, tmp / "worker.log") as worker:
                assert worker.proc is not None
                pid = worker.proc.pid
                idle_kb = _status_kb(pid, "VmRSS")
                response = httpx.post(worker.url + "/api/admin/generate/batch", timeout=60,
                                      json={"prompts": [f"catalogue item {i}"
                                                        for i in range(N_IMAGES)],
                                            "model": "gpt-image-2", "size": "1024x1024",
                                            "quality": "high", "mode": "batch"})
                response.raise_for_status()
                job_id = response.json()["id"]
                started = time.monotonic()
                samples: list[tuple[float, float]] = []
                done_sampling = threading.Event()

                def sample() -> None:  # RSS over time: where the peak happens
                    while not done_sampling.wait(0.2):
                        samples.append((time.monotonic() - started, _status_kb(pid, "VmRSS")))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                row = wait_finished(engine, job_id, timeout_s=900, interval_s=0.5)
                elapsed_s = time.monotonic() - started
                peak_kb = _status_kb(pid, "VmHWM")
                done_sampling.set()
                sampler.join()
        finally:
            engine.dispose()
        stored = sum(f.stat().st_size for f in (tmp / "images").rglob("*.png"))
    done = row.completed_tasks == N_IMAGES
    peak_mb = peak_kb / 1024
    line_mb = len(png) * 4 / 3 / 1e6
    step = max(1, len(samples) // 12)
    trace = " ".join(f"{t:.0f}s:{kb / 1024:.0f}" for t, kb in samples[::step])
    print(f"   RSS MB over time: {trace}", flush=True)
    note = (f"{N_IMAGES} lines of {line_mb:.1f} MB base64 (PNG {len(png) / 1e6:.1f} MB), "
            f"{N_IMAGES * line_mb / 1000:.1f} GB streamed; idle RSS {idle_kb / 1024:.0f} MB; "
            f"submit to done {elapsed_s:.0f} s ({N_IMAGES / elapsed_s:.1f} images/s incl. "
            f"polls); {stored / 1e9:.2f} GB stored; "
            f"{row.completed_tasks}/{N_IMAGES} completed; {load_note()}")
    return [
        figure("batch ingest: worker peak RSS (500 x 1024x1024 output file)", peak_mb, "MB",
               goal=f"<= {GOAL_MB:.0f}", check=lambda v: v <= GOAL_MB and done, note=note),
        figure("batch ingest: images per second", N_IMAGES / elapsed_s, "images/s",
               note="sets BATCH_CHUNK_SIZE: a chunk is re-read whole after a crash"),
    ]


if __name__ == "__main__":
    for f in run():
        print(f.line())
