"""The dashboard's pages under AppTest against a real PostgreSQL: submit, job detail with
gallery and failures, retry, cancel, pause/resume."""

from __future__ import annotations

import io
import zipfile
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.dispatch import get_dispatcher
from core.jobs import views
from dashboard import data
from tests.dashboard.conftest import open_page, seeded_job, submit

MODERATED = "[[demo:moderation_blocked]] a forbidden thing"
INVALID = "[[demo:invalid_request]] a malformed thing"
# Markdown and HTML that must come out as typed, never rendered.
TRICKY = "a <b>bold</b> **lamp** <img src=x onerror=alert(1)> [link](javascript:x)"


def _job_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id, total_tasks FROM generation_jobs")).all())


def _task_states(engine: Engine, job_id: object) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, attempts FROM generation_tasks "
                                 "WHERE job_id = :j"), {"j": job_id}).all()
    return {str(r.id): (r.status, r.attempts) for r in rows}


def _texts(at: Any) -> list[str]:
    return [t.value for t in at.text]


def _frame(at: Any, key: str) -> Any:
    matches = [d for d in at.dataframe if d.key == key]
    assert matches, f"no dataframe {key!r}: {[d.key for d in at.dataframe]}"
    return matches[0].value


def test_submit_creates_job_with_right_task_count(settings: Settings, engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value(
        f"a red chair\n{TRICKY}\n\na red chair\n").run()
    at.number_input(key="count_per_prompt").set_value(2).run()
    warnings = " ".join(w.value for w in at.warning)
    assert "1 blank line(s) skipped: line 3" in warnings
    assert "1 prompt(s) appear more than once" in warnings
    assert [m.value for m in at.metric] == ["3", "6", "$0.00"]

    at.button(key="submit").click().run()

    assert not at.exception
    rows = _job_rows(engine)
    assert len(rows) == 1 and rows[0].total_tasks == 6
    tasks = views.list_tasks(rows[0].id, limit=100, engine=engine)
    assert len(tasks) == 6
    assert sorted({t.prompt for t in tasks}) == sorted({"a red chair", TRICKY})
    assert all(t.status == "queued" for t in tasks)  # handed to the local queue
    assert any(str(rows[0].id) in s.value for s in at.success)
    # Straight on to the job's page, which shows the job just submitted.
    assert at.title[0].value == f"Job {str(rows[0].id)[:8]}"
    assert at.query_params["job_id"] == str(rows[0].id)
    at.switch_page("app_pages/submit.py").run()
    assert at.text_area(key="prompts_text").value == ""  # a second click sends nothing
    assert at.button(key="submit").disabled  # "Submit 0 images" is not offered


def test_csv_upload_reads_the_prompt_column(settings: Settings, engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.radio(key="source_kind").set_value("Upload a CSV or TXT file").run()
    at.file_uploader(key="prompts_file_0").upload(
        "batch.csv", b'id,prompt\n1,"a kite, red"\n2,a boat\n3,\n4,a tree\n', "text/csv").run()
    assert "1 blank row(s) skipped: row 4" in " ".join(w.value for w in at.warning)
    at.button(key="submit").click().run()
    rows = _job_rows(engine)
    assert len(rows) == 1 and rows[0].total_tasks == 3
    prompts = [t.prompt for t in views.list_tasks(rows[0].id, engine=engine)]
    assert prompts == ["a kite, red", "a boat", "a tree"]
    at.switch_page("app_pages/submit.py").run()
    at.radio(key="source_kind").set_value("Upload a CSV or TXT file").run()
    assert at.file_uploader[0].key == "prompts_file_1"  # a fresh, empty uploader


def test_csv_header_is_asked_and_never_billed(settings: Settings, engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.radio(key="source_kind").set_value("Upload a CSV or TXT file").run()
    at.file_uploader(key="prompts_file_0").upload(
        "ideas.csv", b"Prompt Text;id\na green teapot, studio light;1\n", "text/csv").run()
    assert at.checkbox(key="csv_header").value  # recognised as a header
    assert [m.value for m in at.metric][:2] == ["1", "1"]
    at.button(key="submit").click().run()
    (row,) = _job_rows(engine)
    assert [t.prompt for t in views.list_tasks(row.id, engine=engine)] == [
        "a green teapot, studio light"]


@pytest.fixture
def openai_env(env: dict[str, str]) -> dict[str, str]:
    # The OpenAI model is only configured: submitting calls no model.
    env.update(IMAGE_PROVIDER="openai", OPENAI_API_KEY="sk-test-not-used")
    return env


@pytest.mark.usefixtures("openai_env")
def test_openai_options_and_cost_before_submitting(settings: Settings, engine: Engine
                                                   ) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a chair\na lamp").run()
    at.selectbox(key="model").set_value("gpt-image-1.5")
    at.selectbox(key="size").set_value("1024x1536")
    at.selectbox(key="quality").set_value("high").run()
    # 2 images at $0.20 (gpt-image-1.5, 1024x1536, high) from core/billing/prices.py
    assert [m.value for m in at.metric] == ["2", "2", "$0.40"]
    at.button(key="submit").click().run()
    job = views.list_jobs(engine=engine)[0]
    assert (job.provider, job.model, job.size, job.quality) == (
        "openai", "gpt-image-1.5", "1024x1536", "high")
    assert job.estimated_cost_usd == Decimal("0.4")


def test_invalid_submission_shows_its_message_and_creates_nothing(
    env: dict[str, str], engine: Engine
) -> None:
    at = open_page("app_pages/submit.py")
    assert at.button(key="submit").disabled  # nothing to submit: nothing offered

    long_prompt = "x" * 5000  # MAX_PROMPT_CHARS defaults to 4000
    at.text_area(key="prompts_text").set_value(f"a fine prompt\n\n{long_prompt}").run()
    assert at.button(key="submit").disabled
    errors = [e.value for e in at.error]
    assert any("Prompt on line 3: at most 4000 characters (got 5000)" in e for e in errors)
    assert _job_rows(engine) == []


def test_job_detail_shows_gallery_and_failures(settings: Settings, engine: Engine) -> None:
    job = seeded_job(settings, engine, ["a red chair", TRICKY, MODERATED, INVALID])
    assert (job.status, job.completed_tasks, job.failed_tasks) == (
        "completed_with_errors", 2, 2)

    at = open_page("app_pages/job.py", job_id=str(job.id))

    assert at.title[0].value == f"Job {str(job.id)[:8]}"
    assert not any("Updating every" in c.value for c in at.caption)  # finished: no refresh
    assert len(at.image) == 2  # one thumbnail per succeeded task
    assert all(url.startswith("/mock/media/") for img in at.image for url in img.value)
    texts = _texts(at)
    assert "a red chair" in texts and TRICKY in texts  # verbatim, as plain text
    assert not any("<b>" in m.value for m in at.markdown)
    failures = _frame(at, "failures_table")
    assert sorted(failures["error code"]) == ["invalid_request", "moderation_blocked"]
    assert sorted(failures["prompt"]) == sorted([MODERATED, INVALID])
    assert list(failures["attempts"]) == [1, 1]

    first = next(b for b in at.button if b.key and b.key.startswith("full_"))
    first.click().run()  # the full image opens in a dialog, read only now
    assert len(at.image) == 3

    at.selectbox(key="error_code_filter").set_value("moderation_blocked").run()
    failures = _frame(at, "failures_table")
    assert list(failures["prompt"]) == [MODERATED]


def test_export_buttons_build_what_streamlit_can_serve(settings: Settings,
                                                       engine: Engine) -> None:
    # The download buttons defer to these callables; Streamlit serves str/bytes/BytesIO
    # only (a real file object is refused at click time, seen in the browser test).
    job = seeded_job(settings, engine, ["a red chair", MODERATED])
    csv_data = data.tasks_csv(job.id)()
    zip_data = data.images_zip(job.id)()
    assert isinstance(csv_data, bytes) and isinstance(zip_data, bytes)
    assert csv_data.decode().count("\n") == 3  # header + two tasks
    with zipfile.ZipFile(io.BytesIO(zip_data)) as zf:
        assert len(zf.namelist()) == 2  # one image and the manifest


def test_retry_all_requeues_exactly_the_failed_tasks(settings: Settings,
                                                     engine: Engine) -> None:
    job = seeded_job(settings, engine, ["a red chair", MODERATED, "a lamp", INVALID])
    before = _task_states(engine, job.id)
    failed = {tid for tid, (status, _) in before.items() if status == "failed"}
    assert len(failed) == 2

    at = open_page("app_pages/job.py", job_id=str(job.id))
    # Both are refusals: left alone unless the operator includes them.
    assert at.button(key="retry_all").disabled
    at.checkbox(key="retry_include_refusals").check().run()
    at.button(key="retry_all").click().run()

    after = _task_states(engine, job.id)
    changed = {tid for tid in before if after[tid] != before[tid]}
    assert changed == failed
    assert all(after[tid] == ("queued", 0) for tid in failed)
    assert views.get_job(job.id, engine=engine).status == "running"
    assert any("Requeued 2 failed task(s)" in s.value for s in at.success)
    # The progress line, the tab and the button agree on what is left.
    progress = [p for p in at.get("progress")]
    assert progress and "0 failed" in progress[0].proto.text
    assert [t.label for t in at.tabs][1] == "Failures (0)"


def test_retry_selected_requeues_only_the_selected_task(settings: Settings,
                                                        engine: Engine) -> None:
    job = seeded_job(settings, engine, [MODERATED, INVALID, "a lamp"])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    shown = _frame(at, "failures_table")
    at.session_state["failures_table"] = {"selection": {"rows": [1], "columns": []}}
    at.run()
    at.button(key="retry_selected").click().run()

    after = _task_states(engine, job.id)
    full = {short: next(t for t in after if t.startswith(short)) for short in shown["task"]}
    assert after[full[shown["task"][1]]] == ("queued", 0)
    assert after[full[shown["task"][0]]] == ("failed", 1)
    assert views.get_job(job.id, engine=engine).failed_tasks == 1


def test_cancel_cancels_the_job(settings: Settings, engine: Engine) -> None:
    job = submit(settings, engine, ["a chair", "a lamp", "a kite"])  # no worker: all queued
    at = open_page("app_pages/job.py", job_id=str(job.id))
    assert any("Updating every 2 s" in c.value for c in at.caption)  # live while it runs
    at.button(key="cancel").click().run()
    assert views.get_job(job.id, engine=engine).status == "pending"  # asks first
    at.button(key="confirm_cancel_yes").click().run()

    view = views.get_job(job.id, engine=engine)
    assert (view.status, view.cancelled_tasks) == ("cancelled", 3)
    assert {s for s, _ in _task_states(engine, job.id).values()} == {"cancelled"}
    assert at.button(key="cancel").disabled
    assert not any("Updating every" in c.value for c in at.caption)


def test_pause_and_resume_change_the_queue_state(settings: Settings, engine: Engine) -> None:
    dispatcher = get_dispatcher(settings)
    assert not dispatcher.is_paused()
    at = open_page("app_pages/queue.py")
    assert "is running" in at.success[0].value

    at.button(key="pause").click().run()
    assert dispatcher.is_paused()
    assert any("is paused" in w.value for w in at.warning)

    at.button(key="resume").click().run()
    assert not dispatcher.is_paused()
    assert "is running" in " ".join(s.value for s in at.success)


def test_jobs_page_lists_jobs_with_progress_and_links(settings: Settings,
                                                      engine: Engine) -> None:
    done = seeded_job(settings, engine, ["a red chair", MODERATED])
    waiting = submit(settings, engine, ["a lamp"], count=3)
    at = open_page("app_pages/jobs.py")
    table = _frame(at, "jobs_table")
    assert list(table["job"]) == [f"job?job_id={waiting.id}", f"job?job_id={done.id}"]
    assert list(table["progress"]) == [0.0, 100.0]
    assert list(table["images"]) == [3, 2]

    assert any("updating every 5 s while jobs run" in c.value for c in at.caption)
    assert any(h.value == "Task states over time (latest 2 jobs)" for h in at.subheader)

    at.session_state["jobs_table"] = {"selection": {"rows": [1], "columns": []}}
    at.run()
    assert at.page_link[0].proto.query_string == f"job_id={done.id}"
    assert any(h.value == "Task states over time (selected jobs)" for h in at.subheader)

    at.multiselect(key="status_filter").set_value(["completed_with_errors"]).run()
    assert list(_frame(at, "jobs_table")["job"]) == [f"job?job_id={done.id}"]
