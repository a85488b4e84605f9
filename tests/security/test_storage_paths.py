"""Object paths come from ids only; the local store and the image route refuse traversal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from core.errors import StorageError
from core.storage.base import object_keys
from core.storage.local import LocalStorage
from tests.conftest import WorkerProcess
from tests.reliability import wait_finished

ESCAPES = ["../outside.png", "a/../../outside.png", "/etc/passwd", "..", "", "a\\..\\b",
           "a\x00b.png", "job/../../../etc/passwd", "./../outside.png"]


def test_object_keys_are_built_from_ids_and_refuse_anything_else() -> None:
    job, task = uuid.uuid4(), uuid.uuid4()
    keys = object_keys(job, task)
    assert (keys.image, keys.thumbnail) == (f"{job}/{task}.png", f"{job}/thumbs/{task}.webp")
    for bad in ("../../etc", "a/b", "", "x" * 36):
        with pytest.raises(ValueError):
            object_keys(bad, task)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            object_keys(job, bad)  # type: ignore[arg-type]


def test_local_storage_refuses_keys_that_leave_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    (root / "link").symlink_to(tmp_path)  # a symlink pointing out of the folder
    store = LocalStorage(root)
    for key in [*ESCAPES, "link/secret.txt"]:
        with pytest.raises(StorageError):
            store.save(key, b"x", "image/png")
        with pytest.raises(StorageError):
            store.read(key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "secret.txt"]
    assert (tmp_path / "secret.txt").read_text() == "outside"


def test_prompt_text_never_reaches_a_path_and_the_image_route_refuses_traversal(
    start_worker: Callable[..., WorkerProcess], engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    worker = start_worker(DEMO_LATENCY_MS="0", DEMO_IMAGE_PX="32")
    prompts = ["../../secret", "/etc/passwd", "..\\..\\x", "a/b/c", "%2e%2e%2fsecret"]
    job = httpx.post(worker.url + "/api/admin/generate/batch", json={"prompts": prompts},
                     timeout=30).json()
    assert wait_finished(engine, job["id"], timeout_s=30) == {"succeeded": len(prompts)}
    with engine.connect() as conn:
        paths = [r.image_path for r in conn.execute(text(
            "SELECT id, image_path FROM generation_tasks WHERE job_id=:j"), {"j": job["id"]})]
    for path in paths:
        job_part, name = path.split("/")
        assert job_part == job["id"] and uuid.UUID(name.removesuffix(".png"))
    images = tmp_path / "images"
    assert {p.relative_to(images).parts[0] for p in images.rglob("*")} == {job["id"]}
    for probe in ("/images/..%2fsecret.txt", "/images/%2e%2e/secret.txt",
                  "/images/..%2F..%2Fsecret.txt", "/images/%2e%2e%2f%2e%2e%2fsecret.txt",
                  f"/images/{job['id']}/..%2f..%2fsecret.txt", "/images/%2fetc%2fpasswd"):
        r = httpx.get(worker.url + probe, timeout=10)
        assert r.status_code == 404 and "outside" not in r.text, probe
    # A real one is served.
    assert httpx.get(worker.url + "/images/" + paths[0], timeout=10).status_code == 200
