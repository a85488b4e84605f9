"""Reports and exports on a 10,000-task job: everything paged or aggregated in SQL, the
job page renders one page of each table, exports stream the whole job."""

from __future__ import annotations

import csv
import io
import itertools
import time
import zipfile
from typing import Any

import pytest
from sqlalchemy import Engine

from core.config import Settings
from core.jobs import export, reports, views
from core.storage import get_storage
from tests.dashboard.conftest import deliver, open_page, seeded_job, submit

BIG = 10_000
DELIVERED = 12
MODERATED = "[[demo:moderation_blocked]] refused"


@pytest.fixture
def big_job(settings: Settings, engine: Engine) -> views.JobView:
    prompts = [f"prompt number {i}" for i in range(BIG)]
    prompts[3] = MODERATED
    prompts[7] = "=HYPERLINK(\"http://evil.invalid\") " + MODERATED
    job = submit(settings, engine, prompts)
    first = views.list_tasks(job.id, limit=DELIVERED, engine=engine)
    deliver(settings, [t.id for t in first])
    return views.get_job(job.id, engine=engine)


def test_reports_on_a_10000_task_job(big_job: views.JobView, engine: Engine) -> None:
    job_id = big_job.id
    assert (big_job.total_tasks, big_job.completed_tasks, big_job.failed_tasks) == (
        BIG, DELIVERED - 2, 2)

    gallery = reports.gallery_page(job_id, limit=24, engine=engine)
    assert [g.prompt_index for g in gallery] == [i for i in range(DELIVERED) if i not in (3, 7)]
    assert all(g.thumbnail_path and g.image_path for g in gallery)
    failures = reports.failures_page(job_id, engine=engine)
    assert [(f.prompt_index, f.last_error_code) for f in failures] == [
        (3, "moderation_blocked"), (7, "moderation_blocked")]
    assert reports.error_codes(job_id, engine=engine) == [("moderation_blocked", 2)]
    assert reports.count_failures(job_id, error_code="timeout", engine=engine) == 0

    series = reports.task_state_series([job_id], engine=engine)
    assert 2 <= len(series) <= reports.MAX_CHART_POINTS + 2  # plus the start and now
    assert all(a.bucket < b.bucket for a, b in itertools.pairwise(series))
    assert (series[0].succeeded, series[0].remaining) == (0, BIG)
    last = series[-1]
    assert (last.succeeded, last.failed, last.cancelled, last.remaining) == (
        DELIVERED - 2, 2, 0, BIG - DELIVERED)

    perf = reports.job_performance(job_id, engine=engine)
    assert (perf.succeeded, perf.failed, perf.retrying) == (DELIVERED - 2, 2, 0)
    assert perf.p50_ms is not None and perf.p50_ms <= (perf.p99_ms or 0)
    assert perf.images_per_min is not None and perf.images_per_min > 0

    depth = reports.queue_depth(engine=engine)
    assert (depth.pending, depth.due, depth.in_flight) == (0, BIG - DELIVERED, 0)
    assert sum(p.succeeded for p in reports.recent_throughput(engine=engine)) == DELIVERED - 2

    listed = reports.recent_jobs(engine=engine)
    assert [j.id for j in listed] == [job_id]
    assert listed[0].cost_so_far_usd == 0  # the demo model is free
    assert reports.count_jobs(statuses=["running"], engine=engine) == 1


def test_job_page_of_a_10000_task_job_renders_one_page(big_job: views.JobView) -> None:
    started = time.perf_counter()
    at = open_page("app_pages/job.py", job_id=str(big_job.id))
    elapsed = time.perf_counter() - started
    print(f"\njob page of a {BIG}-task job rendered in {elapsed:.2f} s (AppTest)")
    assert len(at.image) == DELIVERED - 2
    # The all-tasks table (a read-only table keeps no key in AppTest).
    tasks = next(d.value for d in at.dataframe if "latency ms" in d.value.columns)
    assert len(tasks) == 100
    assert any(f"{BIG} task(s) · page 1 of 100" in c.value for c in at.caption)


def test_csv_export_streams_every_task(big_job: views.JobView, engine: Engine) -> None:
    out = io.StringIO()
    assert export.write_tasks_csv(big_job.id, out, engine=engine) == BIG
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == BIG
    assert [r["prompt_index"] for r in rows[:3]] == ["0", "1", "2"]
    assert rows[-1]["prompt"] == f"prompt number {BIG - 1}"
    assert rows[3]["last_error_code"] == "moderation_blocked"
    assert rows[7]["prompt"].startswith("'=HYPERLINK")  # not a live formula
    assert {r["status"] for r in rows} == {"succeeded", "failed", "queued"}


def test_zip_export_holds_every_image_and_a_manifest(
    settings: Settings, engine: Engine, tmp_path: Any
) -> None:
    job = seeded_job(settings, engine, ["a chair", MODERATED, "a/../../etc lamp"])
    path = tmp_path / "job.zip"
    with path.open("wb") as out:
        result = export.write_images_zip(job.id, get_storage(settings), out, engine=engine)
    assert (result.images, result.missing) == (2, 0)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert len(names) == 3 and names[-1] == "manifest.csv"
        assert names[0].startswith("00001-01-") and names[1].startswith("00003-01-")
        assert all(zf.read(n).startswith(b"\x89PNG") for n in names[:2])
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert [m["prompt"] for m in manifest] == ["a chair", "a/../../etc lamp"]


def test_zip_export_lists_a_missing_image(settings: Settings, engine: Engine,
                                          tmp_path: Any) -> None:
    job = seeded_job(settings, engine, ["a chair", "a lamp"])
    first = reports.gallery_page(job.id, engine=engine)[0]
    assert first.image_path
    (tmp_path / "images" / first.image_path).unlink()
    buffer = io.BytesIO()
    result = export.write_images_zip(job.id, get_storage(settings), buffer, engine=engine)
    assert (result.images, result.missing) == (1, 1)
    with zipfile.ZipFile(buffer) as zf:
        manifest = zf.read("manifest.csv").decode()
    assert "missing: could not read" in manifest
