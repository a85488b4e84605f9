"""The team widgets under AppTest against a real PostgreSQL: name/tags/webhook at submit
with the operator recorded, search on Jobs, who submitted / clone / delete /
edit-and-resubmit on the Job page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from core.config import Settings
from core.jobs import audit, lifecycle, views
from core.jobs.meta import JobMeta
from core.jobs.validation import limits_from_settings, validate_batch
from dashboard import auth
from tests.dashboard.conftest import open_page, seeded_job

MODERATED = "[[demo:moderation_blocked]] a forbidden teapot"


def _jobs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, name, tags, submitted_by, webhook_url, total_tasks "
            "FROM generation_jobs ORDER BY created_at")).all())


def _frame(at: Any, key: str) -> Any:
    if key == "search_table":  # AppTest keeps keys of selectable tables only; it is alone
        assert len(at.dataframe) == 1
        return at.dataframe[0].value
    matches = [d for d in at.dataframe if d.key == key]
    assert matches, f"no dataframe {key!r}: {[d.key for d in at.dataframe]}"
    return matches[0].value


def test_submit_records_name_tags_webhook_and_operator(settings: Settings,
                                                        engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a red chair\na lamp").run()
    at.text_input(key="job_name").set_value("Chairs **bold**").run()
    at.text_input(key="job_tags").set_value("Chairs, not ok!").run()
    assert any("Tags[1]" in e.value for e in at.error)
    assert at.button(key="submit").disabled  # the bad tag blocks the submit
    assert _jobs(engine) == []

    at.text_input(key="job_tags").set_value("Chairs, spring").run()
    at.text_input(key="job_webhook").set_value("http://127.0.0.1:9/hook").run()
    at.button(key="submit").click().run()
    assert not at.exception
    [job] = _jobs(engine)
    assert (job.name, job.tags, job.submitted_by, job.webhook_url, job.total_tasks) == (
        "Chairs **bold**", ["chairs", "spring"], auth.OPEN_OPERATOR,
        "http://127.0.0.1:9/hook", 2)


def _submit(settings: Settings, engine: Engine, prompts: list[str], **meta: Any
            ) -> views.JobView:
    spec = validate_batch(prompts, "none", 1, limits_from_settings(settings))
    return lifecycle.submit_batch(spec, engine=engine, settings=settings, meta=JobMeta(**meta))


def test_jobs_page_searches_by_prompt_tag_and_submitter(settings: Settings,
                                                        engine: Engine) -> None:
    teapots = _submit(settings, engine, ["a green teapot, studio light"], name="Teapots",
                      tags=("kitchen",), submitted_by="alice@example.com")
    _submit(settings, engine, ["a brass lamp"], name="Lamps", tags=("hall",),
            submitted_by="ci-script")
    at = open_page("app_pages/jobs.py")
    table = _frame(at, "jobs_table")
    assert sorted(table["name"]) == ["Lamps", "Teapots"]
    assert sorted(table["submitted by"]) == ["alice@example.com", "ci-script"]

    at.text_input(key="job_search").set_value("TEAPOT").run()
    found = _frame(at, "search_table")
    assert list(found["job"]) == [f"job?job_id={teapots.id}"]
    at.text_input(key="job_search").set_value("").run()
    at.selectbox(key="submitter_filter").set_value("ci-script").run()
    assert list(_frame(at, "search_table")["name"]) == ["Lamps"]
    at.text_input(key="tag_filter").set_value("kitchen").run()
    assert any("No job matches" in i.value for i in at.info)
    at.text_input(key="job_search").set_value("ab").run()
    assert any("at least 3 characters" in e.value for e in at.error)


def test_job_page_clone_resubmit_and_delete(settings: Settings, engine: Engine) -> None:
    job = seeded_job(settings, engine, ["a red chair", MODERATED])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    assert any("submitted by unknown" in t.value for t in at.text)

    # Edit the refused prompt and resubmit it: one more task of the same job.
    assert at.selectbox(key="resubmit_task").value is not None
    task_key = next(t.key for t in at.text_area if t.key and t.key.startswith("edit_"))
    at.text_area(key=task_key).set_value("a permitted teapot").run()
    at.button(key="resubmit").click().run()
    assert not at.exception
    after = views.get_job(job.id, engine=engine)
    assert (after.total_tasks, after.status) == (3, "running")
    prompts = {t.prompt: t.status for t in views.list_tasks(job.id, engine=engine)}
    assert prompts["a permitted teapot"] == "queued"

    at.button(key="clone_job").click().run()
    assert not at.exception
    rows = [r for r in _jobs(engine) if r.id != job.id]
    assert len(rows) == 1 and rows[0].total_tasks == 2  # the edit replaces the refusal
    assert rows[0].submitted_by == auth.OPEN_OPERATOR

    # The original job is running again (the resubmitted task): delete is refused.
    at = open_page("app_pages/job.py", job_id=str(job.id))
    history = [d.label for d in at.expander if d.label.startswith("History")]
    assert history == ["History (2)"]  # the resubmit and the clone, with who
    at.button(key="delete_job").click().run()
    assert any("cancel it first" in e.value for e in at.error)

    at = open_page("app_pages/job.py", job_id=str(rows[0].id))
    at.button(key="cancel").click().run()
    at.button(key="confirm_cancel_yes").click().run()
    at.button(key="delete_job").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="confirm_delete_yes").click().run()
    assert not at.exception
    assert rows[0].id not in {r.id for r in _jobs(engine)}
    [entry] = [e for e in audit.entries(engine=engine) if e.action == "delete_job"]
    assert (entry.job_id, entry.actor) == (rows[0].id, auth.OPEN_OPERATOR)


def test_oidc_operator_is_recorded_as_submitter(settings: Settings, engine: Engine) -> None:
    from tests.dashboard.conftest import app
    from tests.dashboard.test_auth import OIDC

    at = app()
    at.secrets["auth"] = dict(OIDC)
    at.user = {"is_logged_in": True, "email": "Ana@Example.com"}
    at.run()
    at.switch_page("app_pages/submit.py").run()
    at.text_area(key="prompts_text").set_value("a blue vase").run()
    at.button(key="submit").click().run()
    assert not at.exception
    [job] = _jobs(engine)
    assert job.submitted_by == "ana@example.com"


def test_search_says_when_the_database_has_no_trigram_index(settings: Settings,
                                                             engine: Engine) -> None:
    _submit(settings, engine, ["a green teapot"], name="Teapots")
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX IF EXISTS generation_tasks_prompt_trgm_idx"))
    at = open_page("app_pages/jobs.py")
    at.text_input(key="job_search").set_value("teapot").run()
    assert any("no pg_trgm index" in c.value for c in at.caption)
    assert len(_frame(at, "search_table")) == 1  # still found, by scanning
