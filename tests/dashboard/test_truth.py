"""What the pages say is so: times in the operator's zone whatever the database session's
TimeZone, no "None" in tables, the queue chart's hour, the jobs chart's final state,
images per minute that agree with each other, the shipped Streamlit config."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.jobs import lifecycle
from tests.conftest import REPO_ROOT
from tests.dashboard.conftest import open_page, seeded_job

MODERATED = "[[demo:moderation_blocked]] a forbidden thing"


@pytest.fixture
def new_york_db(env: dict[str, str], db_url: str) -> dict[str, str]:
    """The database's sessions in America/New_York (psycopg then hands timestamptz back
    in that zone), the operator in UTC."""
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.conftest import _libpq

    name = make_url(db_url).database
    with psycopg.connect(_libpq(db_url), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
    env["DASHBOARD_TIMEZONE"] = "UTC"
    return env


def _charts(at: Any) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _frame(at: Any, key: str) -> Any:
    found = [d for d in at.dataframe if d.key == key]
    assert found, [d.key for d in at.dataframe]
    return found[0].value


@pytest.mark.usefixtures("new_york_db")
def test_times_are_the_operators_whatever_the_database_zone(
    settings: Settings, engine: Engine
) -> None:
    job = seeded_job(settings, engine, ["a red chair", MODERATED])
    with engine.connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar_one() == "America/New_York"
        utc = conn.execute(text("SELECT created_at FROM generation_jobs")).scalar_one()
    expected = utc.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    at = open_page("app_pages/job.py", job_id=str(job.id))
    caption = at.caption[0].value
    assert f"created {expected} UTC" in caption, caption
    failures = _frame(at, "failures_table")
    assert list(failures["last attempt"]) != [] and all(
        len(v) == 19 for v in failures["last attempt"])
    assert any("failed task(s)" in c.value and "times in UTC" in c.value
               for c in at.caption)

    at = open_page("app_pages/jobs.py")
    table = _frame(at, "jobs_table")
    assert list(table["created"]) == [expected]
    assert any("times in UTC" in c.value for c in at.caption)


def test_tables_have_no_none_cells(settings: Settings, engine: Engine) -> None:
    job = seeded_job(settings, engine, ["a red chair", MODERATED])
    lifecycle.submit_batch(jobs_spec(settings), settings=settings, engine=engine)  # still queued
    at = open_page("app_pages/job.py", job_id=str(job.id))
    frames = [d.value for d in at.dataframe]  # failures, then all tasks
    assert len(frames) == 2 and len(frames[1]) == 2
    for frame in frames:
        assert not frame.isna().to_numpy().any(), frame
        assert "None" not in frame.astype(str).to_numpy(), frame
    at = open_page("app_pages/jobs.py")
    frame = _frame(at, "jobs_table")
    assert "None" not in frame.astype(str).to_numpy()


def jobs_spec(settings: Settings) -> Any:
    from core.jobs.validation import limits_from_settings, validate_batch

    return validate_batch(["a waiting lamp"], "none", 1, limits_from_settings(settings))


def test_failures_table_is_not_clipped(settings: Settings, engine: Engine) -> None:
    job = seeded_job(settings, engine, [f"{MODERATED} {i}" for i in range(12)])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    table = next(d for d in at.dataframe if d.key == "failures_table")
    assert len(table.value) == 12
    # (The height, ui.table_height, sits in the element's layout config, which AppTest
    # does not expose; test_pure checks it fits the page of rows.)
    config = json.loads(table.proto.columns)
    # Every column has a bounded width, so none is pushed out of the page.
    for column in ("#", "prompt", "message", "attempts", "task"):
        assert config.get(column, {}).get("width") in ("small", "medium"), column


def test_jobs_chart_ends_on_the_final_state_with_width(
    settings: Settings, engine: Engine
) -> None:
    seeded_job(settings, engine, [f"a chair {i}" for i in range(5)])
    at = open_page("app_pages/jobs.py")
    (spec,) = _charts(at)
    t = spec["encoding"]["x"]["field"]
    values = _chart_values(at)
    last_t = max(v[t] for v in values)
    final = {v["state"]: v["tasks"] for v in values if v[t] == last_t}
    assert final == {"succeeded": 5, "failed": 0, "cancelled": 0, "remaining": 0}
    before = {v["state"]: v["tasks"] for v in values
              if v[t] == max(x[t] for x in values if x[t] < last_t)}
    # The final state starts before the chart's end: drawn with width, step-after.
    assert before["succeeded"] == 5 and before["remaining"] == 0
    # Drawn on a UTC scale from wall-clock times in the operator's zone.
    assert spec["encoding"]["x"]["scale"]["type"] == "utc"


def _chart_values(at: Any) -> list[dict[str, Any]]:
    chart = at.get("vega_lite_chart")[0].proto
    frames = [d for d in chart.datasets] or []
    import pyarrow as pa

    if frames:
        table = pa.ipc.open_stream(frames[0].data.data).read_all()
    else:
        table = pa.ipc.open_stream(chart.data.data).read_all()
    return table.to_pylist()


def test_queue_chart_covers_the_hour_on_a_24_hour_clock(
    settings: Settings, engine: Engine
) -> None:
    seeded_job(settings, engine, ["a red chair", MODERATED])
    at = open_page("app_pages/queue.py")
    (spec,) = _charts(at)
    x = spec["encoding"]["x"]
    assert x["axis"]["format"] == "%H:%M"
    low, high = x["scale"]["domain"]
    assert high - low == 3600 * 1000  # sixty minutes, not the few that had work


def test_images_per_minute_agree_for_a_short_finished_job(
    settings: Settings, engine: Engine
) -> None:
    job = seeded_job(settings, engine, [f"a chair {i}" for i in range(6)])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    metrics = {m.label: m.value for m in at.metric}
    recent_label = next(label for label in metrics if "5 min" in label)
    whole, recent = float(metrics["Images/min"]), float(metrics[recent_label])
    assert whole > 0 and recent == pytest.approx(whole, rel=0.01)


def test_the_product_hides_deploy_and_red_progress() -> None:
    # The settings Streamlit itself reads for dashboard/app.py, started from elsewhere.
    probe = ("import streamlit.config as c; c._main_script_path = "
             f"{str(REPO_ROOT / 'dashboard' / 'app.py')!r}; "
             "c.get_config_options(force_reparse=True); "
             "print(c.get_option('client.toolbarMode'), c.get_option('theme.primaryColor'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "viewer"
    assert out[1].lower() not in ("#ff4b4b", "red", "none")
