"""Benchmark: the images ZIP of a 2,000-image job, streamed, and the memory it takes.

A real worker (``python -m worker``, no dispatcher) serves the job's ZIP over HTTP, as
the dashboard's "Images (ZIP)" link asks it to; the client reads and discards the
stream. The figure is the worker's peak RSS while streaming (VmHWM) above its RSS just
before (VmRSS): the goal is at most 100 MB, however many images the job holds. The
dashboard process itself only makes the signed link (no image passes through it).

Images are ~1 MB PNGs of noise (as incompressible as a real one), one file hard-linked
under each task's key, so 2,000 of them cost one file's disk space while the export
still reads 2,000 files through the Storage interface.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image
from sqlalchemy import text

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    load_note,
    running_worker,
    submit,
    sync_engine,
    workdir,
)
from core.jobs import export_links

N_IMAGES = 2000
IMAGE_PX = 580  # ~1 MB as an RGB noise PNG
GOAL_MB = 100.0


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _noise_png(path: Path) -> int:
    Image.frombytes("RGB", (IMAGE_PX, IMAGE_PX), os.urandom(IMAGE_PX * IMAGE_PX * 3)).save(
        path, format="PNG", compress_level=1)
    return path.stat().st_size


def run() -> list[Figure]:
    with bench_database("zip") as url, workdir("zip") as tmp:
        env = {**base_env(url, tmp), "RUN_DISPATCHER": "false"}
        with running_worker(env, tmp / "worker.log") as worker:
            job_id = submit(worker.url, [f"picture {i}" for i in range(N_IMAGES)])
            images = tmp / "images"
            sample = tmp / "sample.png"
            image_bytes = _noise_png(sample)
            engine = sync_engine(url)
            with engine.begin() as conn:
                rows = conn.execute(text(
                    "UPDATE generation_tasks SET status = 'succeeded', finished_at = now(), "
                    "image_path = job_id::text || '/' || id::text || '.png' "
                    "WHERE job_id = :j RETURNING image_path"), {"j": job_id}).all()
                conn.execute(text("UPDATE generation_jobs SET status = 'completed', "
                                  "completed_tasks = total_tasks, finished_at = now() "
                                  "WHERE id = :j"), {"j": job_id})
            engine.dispose()
            (images / job_id).mkdir(parents=True)
            for (key,) in rows:
                os.link(sample, images / key)

            assert worker.proc is not None
            pid = worker.proc.pid
            link = export_links.zip_link(worker.url, uuid.UUID(job_id), None)
            httpx.get(worker.url + "/healthz", timeout=10)
            idle_kb = _rss_kb(pid, "VmRSS")
            peak_kb = idle_kb
            stop = threading.Event()

            def sample_rss() -> None:  # every 50 ms while the ZIP streams
                nonlocal peak_kb
                while not stop.is_set():
                    peak_kb = max(peak_kb, _rss_kb(pid, "VmRSS"))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            started = time.monotonic()
            received = 0
            with httpx.stream("GET", link, timeout=600) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    received += len(chunk)
            elapsed = time.monotonic() - started
            stop.set()
            sampler.join()
    above_mb = (peak_kb - idle_kb) / 1024
    note = (f"{N_IMAGES} images of {image_bytes / 1e6:.2f} MB, ZIP {received / 1e6:,.0f} MB "
            f"in {elapsed:.1f} s; worker idle RSS {idle_kb / 1024:.0f} MB, peak "
            f"{peak_kb / 1024:.0f} MB; {load_note()}")
    return [figure("images ZIP, peak memory above idle (2,000 images, streamed)", above_mb,
                   "MB", goal=f"<= {GOAL_MB:.0f} MB", check=lambda v: v <= GOAL_MB,
                   note=note)]
