"""The offline demo model: draws a real, distinct PNG from the prompt with Pillow.

No key, no network. Latency and failures are simulated on request so demos and tests see
the same retry paths as a real provider. A prompt may also ask for a specific failure
with a marker, which makes tests exact instead of statistical:
``[[demo:moderation_blocked]]`` (permanent), ``[[demo:invalid_request]]`` (permanent),
``[[demo:rate_limit]]`` (429), ``[[demo:server_error]]`` (500), ``[[demo:timeout]]``,
``[[demo:flaky:N]]`` (the first N attempts fail with 500, then it succeeds), and
``[[crash-worker]]`` / ``[[crash-worker:MS]]``, which makes the worker process exit hard
(``os._exit``, no clean-up, like an out-of-memory kill) during the task, after the usual
latency or MS milliseconds.

With DEMO_CALL_LOG set, every model call appends ``task_id attempt`` to that file (one
small O_APPEND write, so concurrent processes do not interleave lines), which lets tests
count model calls per task across worker restarts and kills.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import os
import random
import re
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from core import classify
from core.config import Settings
from core.errors import TaskFailure
from core.providers.base import GeneratedImage, ImageRequest

_MARKER = re.compile(r"\[\[demo:([a-z_]+)(?::(\d+))?\]\]")
_CRASH = re.compile(r"\[\[crash-worker(?::(\d+))?\]\]")
CRASH_EXIT_STATUS = 70


@dataclass(frozen=True)
class StormRates:
    """Per-attempt failure rates of a simulated provider storm. The draw is a hash of the
    key (task id and attempt), so a given attempt always meets the same fate."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    retry_after_s: float = 1.0

    def failure(self, key: str) -> TaskFailure | None:
        if not (self.rate_limit or self.server_error or self.timeout):
            return None
        u = _unit("storm:" + key)
        if u < self.rate_limit:
            return classify.classify_http(429, message="demo model: rate limit (storm)",
                                          retry_after_s=self.retry_after_s)
        if u < self.rate_limit + self.server_error:
            return classify.classify_http(500, message="demo model: internal error (storm)")
        if u < self.rate_limit + self.server_error + self.timeout:
            return classify.timeout("demo model: timed out (storm)")
        return None


class DemoProvider:
    name = "demo"

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        transient_failure_rate: float = 0.0,
        permanent_failure_rate: float = 0.0,
        image_px: int = 512,
        storm: StormRates | None = None,
        call_log: str | None = None,
    ) -> None:
        self.call_log = call_log
        self.latency_ms = latency_ms
        self.transient_failure_rate = transient_failure_rate
        self.permanent_failure_rate = permanent_failure_rate
        self.image_px = image_px
        self.storm = storm or StormRates()
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: Settings) -> DemoProvider:
        return cls(
            latency_ms=settings.DEMO_LATENCY_MS,
            transient_failure_rate=settings.DEMO_TRANSIENT_FAILURE_RATE,
            permanent_failure_rate=settings.DEMO_PERMANENT_FAILURE_RATE,
            image_px=settings.DEMO_IMAGE_PX,
            storm=StormRates(settings.DEMO_RATE_LIMIT_RATE, settings.DEMO_SERVER_ERROR_RATE,
                             settings.DEMO_TIMEOUT_RATE, settings.DEMO_RETRY_AFTER_S),
            call_log=settings.DEMO_CALL_LOG,
        )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        if self.call_log:
            _append_line(self.call_log, f"{request.task_id} {request.attempt}\n")
        crash = _CRASH.search(request.prompt)
        if crash:
            delay_ms = int(crash.group(1)) if crash.group(1) else self.latency_ms
            await asyncio.sleep(delay_ms / 1000.0)
            os._exit(CRASH_EXIT_STATUS)  # the whole worker, mid-task, no clean-up
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000.0)
        failure = self._failure_for(request)
        if failure is not None:
            raise failure
        if self.image_px <= 64:
            # Small images are cheap enough to draw on the event loop; a thread hop would
            # cost more than the drawing.
            data = draw_picture(request.prompt, request.seed_key, self.image_px)
        else:
            data = await asyncio.to_thread(
                draw_picture, request.prompt, request.seed_key, self.image_px
            )
        return GeneratedImage(data=data, content_type="image/png")

    async def aclose(self) -> None:
        return None

    def _failure_for(self, request: ImageRequest) -> TaskFailure | None:
        marker = _MARKER.search(request.prompt)
        if marker:
            kind, number = marker.group(1), marker.group(2)
            if kind in ("moderation_blocked", "invalid_request"):
                return classify.classify_http(
                    400, code=kind, message=f"demo model refused the prompt ({kind})"
                )
            if kind == "rate_limit":
                return classify.classify_http(
                    429, message="demo model: rate limit reached", retry_after_s=0.05
                )
            if kind == "server_error":
                return classify.classify_http(500, message="demo model: internal error")
            if kind == "timeout":
                return classify.timeout("demo model: simulated timeout")
            if kind == "flaky" and request.attempt <= int(number or 1):
                return classify.classify_http(500, message="demo model: flaky failure")
        # Permanent failures follow the prompt (the same prompt always fails), transient
        # ones are drawn per attempt.
        if self.permanent_failure_rate and _unit(request.seed_key or request.prompt) < (
            self.permanent_failure_rate
        ):
            return classify.classify_http(
                400, code="moderation_blocked", message="demo model: simulated refusal"
            )
        if self.transient_failure_rate and self._rng.random() < self.transient_failure_rate:
            return classify.classify_http(503, message="demo model: simulated outage")
        return self.storm.failure(f"{request.task_id}:{request.attempt}")


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_call_log(path: str) -> dict[str, int]:
    """Model calls per task id, from a DEMO_CALL_LOG file."""
    counts: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                task_id = line.split(" ", 1)[0].strip()
                if task_id:
                    counts[task_id] = counts.get(task_id, 0) + 1
    except FileNotFoundError:
        pass
    return counts


def _unit(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def draw_picture(prompt: str, seed_key: str, px: int) -> bytes:
    """A deterministic picture for (prompt, seed_key): gradient, shapes and the prompt."""
    digest = hashlib.sha256(f"{seed_key}\x00{prompt}".encode()).digest()
    rng = random.Random(digest)
    hue = digest[0] / 255.0
    top = _rgb(hue, 0.55, 0.95)
    bottom = _rgb((hue + 0.18) % 1.0, 0.75, 0.45)
    # The vertical gradient as raw rows (one bytes object per row, not a line drawn per
    # row through ImageDraw: the same pixels at a fraction of the calls).
    rows = []
    for y in range(px):
        t = y / max(px - 1, 1)
        rows.append(bytes(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)) * px)
    image = Image.frombytes("RGB", (px, px), b"".join(rows))
    draw = ImageDraw.Draw(image)
    for _ in range(3 + digest[1] % 5):
        x0, y0 = rng.randrange(px), rng.randrange(px)
        r = rng.randrange(max(px // 16, 1), max(px // 4, 2))
        colour = _rgb(rng.random(), 0.6, 0.9)
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour, outline=(255, 255, 255))
        else:
            draw.rectangle([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour, outline=(0, 0, 0))
    if px >= 128:
        font = ImageFont.load_default(size=max(px // 24, 10))
        lines = textwrap.wrap(prompt, width=max(px // 14, 10))[:6]
        box_top = px - (len(lines) + 1) * (px // 20) - 8
        draw.rectangle([0, box_top, px, px], fill=(0, 0, 0))
        for i, line in enumerate(lines):
            draw.text((10, box_top + 6 + i * (px // 20)), line, fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)
