"""The dashboard in a real browser: a worker with its local dispatcher, `streamlit run
dashboard/app.py`, and Debian's Chromium driven by Playwright (no browser download).
Submits a two-prompt batch through the page, watches the job page fill in by itself, and
takes the screenshot the README shows (written to docs/screenshots/ only by
`make screenshots`)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import sync_playwright

from core.config import Settings
from core.dispatch import get_dispatcher
from tests.conftest import REPO_ROOT, WorkerProcess, free_port, need, stop_process, wait_for

CHROMIUM = "/usr/bin/chromium"
# The pictures the README and docs/ show. A test run writes its screenshots to its own
# temporary folder and leaves the checkout as it found it; `make screenshots` sets
# WRITE_SCREENSHOTS=1 to write them here.
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
WRITE_SCREENSHOTS = os.environ.get("WRITE_SCREENSHOTS") == "1"
# What Debian's Chromium needs as root in a closed network: no sandbox, no GPU, and no
# background calls to Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
PROMPTS = ["a red leather armchair", "a brass desk lamp"]


@pytest.fixture
def shot_dir(tmp_path: Path) -> Path:
    """Where this test saves its screenshots: docs/screenshots/ only when asked."""
    return DOCS_SCREENSHOTS if WRITE_SCREENSHOTS else tmp_path


def need_chromium() -> None:
    """Skip without Chromium; but when the screenshots were asked for, fail: a skip would
    leave the old pictures in place and report success."""
    present = Path(CHROMIUM).exists() and shutil.which("chromium") is not None
    reason = "Debian's chromium (scripts/test-deps.d/30-chromium.sh)"
    if not present and WRITE_SCREENSHOTS:
        pytest.fail(f"WRITE_SCREENSHOTS=1 needs {reason}")
    need(present, reason)


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
             # No --client.toolbarMode here: the product's own config must hide Deploy.
             "--server.fileWatcherType", "none"],
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
    start_worker: Callable[..., WorkerProcess], dashboard: str, settings: Settings,
    shot_dir: Path,
) -> None:
    need_chromium()
    screenshot = shot_dir / "job-page.png"
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
            # Straight on to the new job's page (no link to find and click).
            page.wait_for_url("**/job?job_id=*")

            page.get_by_text("pending · 0.0%").wait_for()
            assert page.get_by_role("button", name="Deploy").count() == 0
            assert page.get_by_text("Deploy", exact=True).count() == 0
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
            page.screenshot(path=str(screenshot), full_page=True)

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
    assert screenshot.stat().st_size > 10_000


OUTAGE_PROMPTS = ["a red leather armchair", "[[demo:moderation_blocked]] a forbidden thing"]


@pytest.mark.browser
def test_failures_tab_retry_after_an_outage_and_screenshot(
    start_worker: Callable[..., WorkerProcess], dashboard: str, settings: Settings,
    shot_dir: Path,
) -> None:
    """A provider outage fails a task; a refusal fails another. The Failures tab shows
    both, "Retry all failed" offers only the one a retry can cure (the refusal is left
    alone, said so, with the cost), and a retry picked in the Failures tab runs it."""
    need_chromium()
    failures_shot = shot_dir / "failures-tab.png"
    outage = start_worker(DEMO_TRANSIENT_FAILURE_RATE="1.0", MAX_ATTEMPTS="1",
                          DEMO_LATENCY_MS="50", DEMO_IMAGE_PX="256")
    job = httpx.post(outage.url + "/api/admin/generate/batch", timeout=30, json={
        "prompts": OUTAGE_PROMPTS, "style": "none", "count_per_prompt": 1}).json()
    job_id = job["id"]

    def status() -> dict[str, Any]:
        return httpx.get(f"{outage.url}/api/admin/jobs/{job_id}/status", timeout=10).json()

    wait_for(lambda: status()["failed_tasks"] == 2, timeout_s=60, message="two failures")
    outage.stop()
    recovered = start_worker(DEMO_LATENCY_MS="50", DEMO_IMAGE_PX="256")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            # An operator in Tokyo: with no DASHBOARD_TIMEZONE, times follow the browser.
            page = browser.new_page(viewport={"width": 1400, "height": 1100},
                                    timezone_id="Asia/Tokyo")
            page.set_default_timeout(30_000)
            page.goto(f"{dashboard}/job?job_id={job_id}")
            page.get_by_text("failed · 100.0% · 0 succeeded, 2 failed").wait_for()
            created = datetime.fromisoformat(httpx.get(
                f"{recovered.url}/api/admin/jobs/{job_id}", timeout=10).json()["created_at"])
            tokyo = created.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M")
            page.get_by_text(f"created {tokyo}").wait_for()
            assert page.get_by_text("Asia/Tokyo").count() >= 1
            page.get_by_role("button", name="Retry all failed (1)").wait_for()
            page.get_by_text("1 refusal(s) left alone").wait_for()
            page.get_by_role("tab", name="Failures (2)").click()
            page.get_by_text("2 failed task(s)").wait_for()
            grid = page.locator('[data-testid="stDataFrame"]').first
            grid.wait_for()
            page.wait_for_timeout(800)  # let the grid and fonts settle for the picture
            page.screenshot(path=str(failures_shot), full_page=True)

            # Pick the outage's row (prompt order: the armchair is the first row) by its
            # row marker, then retry it from the tab.
            box = grid.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
            page.get_by_role("button", name="Retry selected (1)").click()
            page.get_by_text("Requeued 1 failed task(s)").wait_for()
            wait_for(lambda: httpx.get(
                f"{recovered.url}/api/admin/jobs/{job_id}/status", timeout=10
            ).json()["completed_tasks"] == 1, timeout_s=60, message="the retry succeeded")
            page.get_by_text("completed with errors · 100.0%").wait_for(timeout=60_000)
            # (.first: while a rerun draws, the old tabs may still be on the page)
            page.get_by_role("tab", name="Failures (1)").first.wait_for()
        finally:
            browser.close()
    final = httpx.get(f"{recovered.url}/api/admin/jobs/{job_id}/status", timeout=10).json()
    assert (final["completed_tasks"], final["failed_tasks"]) == (1, 1)
    assert failures_shot.stat().st_size > 10_000
