"""Batch mode in a real browser: a worker with the OpenAI provider pointed at the stub
(Files and Batch APIs), the dashboard, Debian's Chromium. Submits a batch-mode job from
the Submit page (both modes' cost side by side), watches its batches run on the Job page
and takes the screenshots docs/batch-mode.md shows (written to docs/screenshots/ only by
`make screenshots`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from core.config import Settings
from core.providers.demo import draw_picture
from testing.openai_stub import OpenAIStub
from tests.conftest import WorkerProcess, wait_for
from tests.dashboard.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    dashboard,
    need_chromium,
    shot_dir,
)

__all__ = ["dashboard", "shot_dir"]  # the fixtures, imported for this module's tests

PROMPTS = ["a red leather armchair", "a brass desk lamp", "a walnut bookshelf",
           "a linen sofa", "a glass coffee table", "a wool rug"]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        server.batches.image_for = lambda prompt: draw_picture(prompt, "batch", 512)
        server.batches.steps_per_status = 4  # each status stays a few polls
        yield server


@pytest.fixture
def env(env: dict[str, str], stub: OpenAIStub) -> dict[str, str]:
    env.update(IMAGE_PROVIDER="openai", OPENAI_API_KEY=stub.api_key,
               OPENAI_BASE_URL=stub.base_url, BATCH_CHUNK_SIZE="2", BATCH_POLL_S="0.5",
               STORAGE_BACKEND="local")
    return env


@pytest.mark.browser
def test_batch_mode_job_in_the_dashboard(
    start_worker: Callable[..., WorkerProcess], dashboard: str, settings: Settings,
    stub: OpenAIStub, shot_dir: Path,
) -> None:
    need_chromium()
    submit_shot, job_shot = shot_dir / "submit-batch-mode.png", shot_dir / "batch-job.png"
    start_worker()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(dashboard + "/submit")
            box = page.get_by_label("Prompts, one per line")
            box.fill("\n".join(PROMPTS))
            box.press("Control+Enter")
            page.get_by_text("Batch (OpenAI Batch API").click()
            page.get_by_text("batch (chosen)").wait_for()
            page.get_by_text("into a new batch").wait_for()
            # Tall enough for both modes' cost and wait, side by side, under the options.
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.wait_for_timeout(800)
            page.screenshot(path=str(submit_shot), full_page=True)
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.get_by_role("button", name=f"Submit {len(PROMPTS)} images").click()
            # Submit goes straight to the job's page.

            page.get_by_text("Batches", exact=True).wait_for()
            page.get_by_text("completed · 100.0%").wait_for(timeout=120_000)
            images = page.locator('[data-testid="stImage"] img')
            wait_for(lambda: images.count() == len(PROMPTS), timeout_s=30,
                     message="the thumbnails")
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            assert page.get_by_text("Delivery: batch", exact=False).count() == 1
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            page.wait_for_timeout(800)
            page.screenshot(path=str(job_shot), full_page=True)
        finally:
            browser.close()
    seen = stub.batches.snapshot()
    assert seen.batches_created == 3 and seen.requests_run == len(PROMPTS)
    assert job_shot.stat().st_size > 10_000 and submit_shot.stat().st_size > 10_000
