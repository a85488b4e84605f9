"""Fault 3: image storage failing for a while, and a write cut off half way.

Tests run as root, so chmod does not stop writes: the outage is a regular file standing
where the storage folder must be, which makes every save fail until it is removed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from tests.conftest import REPO_ROOT, WorkerProcess, wait_for
from tests.reliability import (
    assert_counters_match_rows,
    assert_exactly_once,
    rows_by_status,
    submit,
    task_ids,
    wait_finished,
)

PROMPTS = 40


def _storage_failures(engine: Engine, job_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM generation_tasks WHERE job_id=:j "
            "AND last_error_code='storage_error' AND attempts >= 2"), {"j": job_id}).scalar())


@pytest.mark.slow
def test_storage_outage_tasks_retry_and_complete_and_no_partial_image_is_served(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.write_bytes(b"not a folder")  # the outage
    worker = start_worker(DEMO_LATENCY_MS="20", DEMO_IMAGE_PX="64", MAX_ATTEMPTS="60",
                          LOCAL_MAX_CONCURRENCY="5")
    job_id = submit(worker, [f"storage outage picture {i}" for i in range(PROMPTS)])["id"]
    wait_for(lambda: _storage_failures(engine, job_id) >= 10, timeout_s=30,
             message="tasks retried after storage errors")
    assert rows_by_status(engine, job_id).get("succeeded", 0) == 0

    # While storage recovers, a reader fetches every image URL again and again: whatever
    # is served must be a whole PNG (writes are write-then-rename).
    keys = [f"{job_id}/{task}.png" for task in task_ids(engine, job_id)]
    served, broken = 0, []
    stop = threading.Event()

    def reader() -> None:
        nonlocal served
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            while not stop.is_set():
                for key in keys:
                    r = client.get("/images/" + key)
                    if r.status_code == 200:
                        served += 1
                        try:
                            Image.open(io.BytesIO(r.content)).load()
                        except Exception as exc:
                            broken.append(f"{key}: {exc}")
                    elif r.status_code != 404:
                        broken.append(f"{key}: HTTP {r.status_code}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    outage_s = time.monotonic()
    images.unlink()  # storage is back
    rows = wait_finished(engine, job_id, timeout_s=60)
    recovery_s = time.monotonic() - outage_s
    stop.set()
    thread.join(timeout=30)

    assert rows == {"succeeded": PROMPTS}
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, images, job_id)
    assert broken == [] and served > 0
    print(f"FIGURES storage: faults=1 tasks={PROMPTS} recovery_s={recovery_s:.1f} "
          f"served_during_recovery={served} broken=0 lost=0 duplicates=0")


_CUT_WRITE = """
import resource, signal, sys
from core.errors import StorageError
from core.storage.local import LocalStorage

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG
store = LocalStorage(sys.argv[1])
store.save("job/task.png", b"A" * 1000, "image/png")
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    store.save("job/task.png", b"B" * 100_000, "image/png")
except StorageError as exc:
    print("refused:", exc)
"""


def test_write_cut_off_half_way_keeps_the_old_image_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    # A real partial write: the file-size limit stops it after 4 KiB of 100 KB.
    done = subprocess.run([sys.executable, "-c", _CUT_WRITE, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: could not write job/task.png")
    assert (tmp_path / "job" / "task.png").read_bytes() == b"A" * 1000
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["task.png"]


def _succeeded(engine: Engine, job_id: str) -> int:
    return rows_by_status(engine, job_id).get("succeeded", 0)


@pytest.mark.slow
def test_storage_down_20_s_during_a_50_task_batch_pays_for_each_image_once(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    """The model answered, storing failed: the answer is staged and the next attempts store
    it without calling the model again. Billed calls are counted at the OpenAI stub."""
    from testing.openai_stub import OpenAIStub

    images, away = tmp_path / "images", tmp_path / "images-away"
    prompts = [f"paid once picture {i}" for i in range(50)]
    with OpenAIStub(latency_s=0.3) as stub:
        worker = start_worker(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
                              OPENAI_API_KEY=stub.api_key, LOCAL_MAX_CONCURRENCY="5",
                              MAX_ATTEMPTS="30", RETRY_MIN_BACKOFF_S="0.5",
                              RETRY_MAX_BACKOFF_S="4")
        job_id = submit(worker, prompts)["id"]
        wait_for(lambda: _succeeded(engine, job_id) >= 5, timeout_s=60, interval_s=0.05,
                 message="5 images stored")
        images.rename(away)  # storage goes down: a file where its folder must be
        images.write_bytes(b"storage is down")
        down_at = time.monotonic()
        stored_before = _succeeded(engine, job_id)
        time.sleep(20)
        assert _storage_failures(engine, job_id) > 0  # the outage really hit deliveries
        images.unlink()
        away.rename(images)  # and comes back
        rows = wait_finished(engine, job_id, timeout_s=120)
        recovery_s = time.monotonic() - down_at - 20
        billed = stub.billed_by_prompt()

    assert rows == {"succeeded": 50}
    assert_counters_match_rows(engine, job_id)
    assert_exactly_once(engine, images, job_id)
    assert sum(billed.values()) == 50, billed.most_common(3)
    assert set(billed) == set(prompts) and set(billed.values()) == {1}
    staged_used = worker.logs().count('"staged_answer_used"')
    assert staged_used > 0
    assert list((tmp_path / "staging").glob("*.bin")) == []  # dropped once stored
    print(f"FIGURES storage_paid_once: tasks=50 outage_s=20 stored_before={stored_before} "
          f"billed_calls={sum(billed.values())} images=50 staged_answers_used={staged_used} "
          f"recovery_after_outage_s={recovery_s:.1f}")
