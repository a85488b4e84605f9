"""The dashboard in a real browser: a worker with its local dispatcher, `streamlit run
dashboard/app.py`, and Debian's Chromium driven by Playwright (no browser download).
Submits a two-prompt batch through the page, watches the job page fill in by itself, and
saves the screenshot the README shows."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from core.config import Settings
from core.dispatch import get_dispatcher
from tests.conftest import REPO_ROOT, WorkerProcess, free_port, need, stop_process, wait_for

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "job-page.png"
# What this machine's Chromium needs as root in a closed network (see DESIGN.md and the
# machine notes): no sandbox, no GPU, and no background calls to Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
PROMPTS = ["a red leather armchair", "a brass desk lamp"]


@pytest.fixture
def dashboard(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            # python -m dashboard: the preflight check, then `streamlit run dashboard/app.py`.
            [sys.executable, "-m", "dashboard", "--server.headless", "true",
             "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited:\n{log_path.read_text(errors='replace')}")
        try:
            return httpx.get(url + "/_stcore/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout_s=60, message="streamlit health")
        yield url
    finally:
        stop_process(proc)


@pytest.mark.browser
def test_submit_watch_and_screenshot_job_page(
    start_worker: Callable[..., WorkerProcess], dashboard: str, settings: Settings
) -> None:
    need(Path(CHROMIUM).exists() and shutil.which("chromium") is not None,
         "Debian's chromium (scripts/test-deps.d/30-chromium.sh)")
    start_worker(DEMO_LATENCY_MS="200", DEMO_IMAGE_PX="512")
    # Paused, so the job page is seen before anything runs; resuming later proves the page
    # follows the job by itself (st.fragment run_every), without a reload.
    dispatcher = get_dispatcher(settings)
    dispatcher.pause()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(dashboard + "/submit")
            box = page.get_by_label("Prompts, one per line")
            box.fill("\n".join(PROMPTS))
            box.press("Control+Enter")  # commits the text area (Streamlit reruns)
            page.get_by_role("button", name="Submit 2 images").click()
            page.get_by_text("Open job").click()

            page.get_by_text("pending · 0.0%").wait_for()
            page.get_by_text("Updating every 2 s while the job runs.").wait_for()
            dispatcher.resume()
            page.get_by_text("completed · 100.0%").wait_for(timeout=60_000)
            # Finished: the page reran once and stopped refreshing itself.
            page.get_by_text("Updating every").wait_for(state="detached")
            images = page.locator('[data-testid="stImage"] img')
            wait_for(lambda: images.count() == 2, timeout_s=30, message="two thumbnails")
            page.wait_for_function(
                "() => { const imgs = document.querySelectorAll("
                "'[data-testid=\"stImage\"] img');"
                " return imgs.length === 2 && [...imgs].every("
                "i => i.complete && i.naturalWidth > 0); }")
            widths: list[Any] = images.evaluate_all("els => els.map(e => e.naturalWidth)")
            assert len(widths) == 2 and all(w > 0 for w in widths), widths
            for prompt in PROMPTS:  # each thumbnail has its prompt under it
                assert page.get_by_text(prompt, exact=True).count() >= 1
            page.wait_for_timeout(500)  # let the final rerun settle before the picture
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The exports are built on click (deferred) and arrive as downloads.
            with page.expect_download() as csv_download:
                page.get_by_role("button", name="Task table (CSV)").click()
            rows = list(csv.DictReader(io.StringIO(
                Path(csv_download.value.path()).read_text(encoding="utf-8"))))
            assert sorted(r["prompt"] for r in rows) == sorted(PROMPTS)
            assert {r["status"] for r in rows} == {"succeeded"}
            with page.expect_download() as zip_download:
                page.get_by_role("button", name="Images (ZIP)").click()
            with zipfile.ZipFile(zip_download.value.path()) as zf:
                names = zf.namelist()
                assert len(names) == 3 and names[-1] == "manifest.csv"
                assert all(zf.read(n).startswith(b"\x89PNG") for n in names[:2])
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
