from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import pytest
from PIL import Image

from core.errors import StorageError, TaskFailure
from core.providers.base import ImageRequest
from core.providers.demo import DemoProvider
from core.storage import make_thumbnail, object_keys
from core.storage.local import LocalStorage


def _request(prompt: str, attempt: int = 1, seed: str = "s") -> ImageRequest:
    return ImageRequest(prompt=prompt, model="demo", size="1024x1024", quality="low",
                        task_id=uuid.uuid4(), attempt=attempt, seed_key=seed)


def test_demo_draws_distinct_real_pngs() -> None:
    provider = DemoProvider(image_px=128)
    a = asyncio.run(provider.generate(_request("a red chair", seed="j:0:0"))).data
    b = asyncio.run(provider.generate(_request("a red chair", seed="j:0:1"))).data
    again = asyncio.run(provider.generate(_request("a red chair", seed="j:0:0"))).data
    assert a != b and a == again
    with Image.open(io.BytesIO(a)) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 50  # not blank


@pytest.mark.parametrize(
    ("marker", "retryable", "code"),
    [
        ("[[demo:moderation_blocked]]", False, "moderation_blocked"),
        ("[[demo:rate_limit]]", True, "rate_limited"),
        ("[[demo:server_error]]", True, "upstream_error"),
        ("[[demo:timeout]]", True, "timeout"),
    ],
)
def test_demo_failure_markers(marker: str, retryable: bool, code: str) -> None:
    with pytest.raises(TaskFailure) as caught:
        asyncio.run(DemoProvider().generate(_request(f"a cat {marker}")))
    assert (caught.value.retryable, caught.value.code) == (retryable, code)


def test_demo_flaky_marker_fails_then_succeeds() -> None:
    provider = DemoProvider(image_px=32)
    for attempt in (1, 2):
        with pytest.raises(TaskFailure):
            asyncio.run(provider.generate(_request("x [[demo:flaky:2]]", attempt=attempt)))
    assert asyncio.run(provider.generate(_request("x [[demo:flaky:2]]", attempt=3))).data


def test_local_storage_writes_atomically_and_refuses_traversal(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    keys = object_keys(uuid.uuid4(), uuid.uuid4())
    store.save(keys.image, b"first", "image/png")
    store.save(keys.image, b"second", "image/png")  # a redelivery overwrites
    assert store.read(keys.image) == b"second"
    assert store.url(keys.image) == "/images/" + keys.image
    assert not list(tmp_path.rglob(".tmp-*"))
    for bad in ("../escape.png", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(StorageError):
            store.save(bad, b"x", "image/png")
    with pytest.raises(ValueError):
        object_keys("../../etc", uuid.uuid4())  # type: ignore[arg-type]


def test_thumbnail_is_small_webp() -> None:
    png = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 10, 10)).save(png, format="PNG")
    thumb = make_thumbnail(png.getvalue())
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "WEBP" and max(image.size) == 256
