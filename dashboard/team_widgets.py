"""The dashboard's team features, as widgets the pages call in a line or two: job name,
tags and webhook on Submit; search on Jobs; who submitted, clone, delete and
edit-and-resubmit on the Job page. Reads and actions go into core (search, job_edit,
retention), never SQL here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import pandas as pd
import streamlit as st

from core.errors import AppError, InvalidInput
from core.jobs import audit, edit, retention, search
from core.jobs.meta import JobMeta, clean_meta
from core.jobs.views import JobView
from dashboard import auth, data, ui

SEARCH_PAGE = 50
ANYONE = "Anyone"
JOBS_PAGE = "app_pages/jobs.py"


# ---- Submit --------------------------------------------------------------------------

def job_fields() -> tuple[JobMeta, str | None]:
    """Name, tags and webhook inputs; the validated values, or a message naming the field."""
    settings = data.settings()
    c1, c2 = st.columns(2)
    name = c1.text_input("Job name (optional)", key="job_name", max_chars=200,
                         placeholder="Spring catalogue")
    tags = c2.text_input("Tags (optional, comma-separated)", key="job_tags",
                         placeholder="catalogue, spring")
    # A password field: a Slack webhook URL is a secret and should not sit on screen.
    hook = st.text_input("Notify when done: webhook URL (optional)", key="job_webhook",
                         type="password",
                         help="A Slack incoming webhook or any URL accepting JSON. Empty = "
                              + ("the default webhook (JOB_WEBHOOK_URL)"
                                 if settings.JOB_WEBHOOK_URL else "no notification"))
    try:
        return clean_meta(name=name, tags=tags, webhook_url=hook,
                          submitted_by=auth.operator(),
                          production=settings.ENVIRONMENT == "production"), None
    except InvalidInput as exc:
        detail = exc.message.split(": ", 1)[-1]
        return JobMeta(submitted_by=auth.operator()), \
            f"{exc.field.replace('_', ' ').capitalize()}: {detail}"


# ---- Jobs ----------------------------------------------------------------------------

def search_filters(statuses: Sequence[str], after: datetime | None,
                   before: datetime | None) -> search.SearchQuery | None:
    """The search row; a query when the operator searches, else None (the plain list)."""
    s1, s2, s3 = st.columns([3, 1, 1])
    text = s1.text_input("Search name, tag or prompt text", key="job_search",
                         placeholder="teapot")
    tag = s2.text_input("Tag", key="tag_filter")
    people = [ANYONE, *_submitters()]
    who = s3.selectbox("Submitted by", people, key="submitter_filter")
    try:
        query = search.SearchQuery.of(text=text, tag=tag,
                                      submitted_by=None if who == ANYONE else who,
                                      statuses=statuses, created_after=after,
                                      created_before=before)
    except InvalidInput as exc:
        st.error(f"{'Search' if exc.field == 'q' else exc.field.capitalize()}: "
                 f"{exc.message.split(': ', 1)[-1]}")
        return None
    return query if query.searching else None


@st.cache_data(ttl=30, show_spinner=False)
def _submitters_for(url: str) -> list[str]:
    return search.submitters(engine=data.engine())


def _submitters() -> list[str]:
    return _submitters_for(data.database_url())


@st.cache_data(ttl=300, show_spinner=False)
def _prompt_index_for(url: str) -> bool:
    return search.prompt_index_present(data.engine())


def _prompt_index() -> bool:
    return _prompt_index_for(data.database_url())


def search_results(query: search.SearchQuery, page_no: int) -> None:
    found = search.search_jobs(query, limit=SEARCH_PAGE, offset=(page_no - 1) * SEARCH_PAGE,
                               engine=data.engine())
    if not found.jobs:
        st.info("No job matches this search.")
        return
    more = " · more on the next page" if found.more else ""
    scanned = ("" if not query.text or _prompt_index() else
               " · this database has no pg_trgm index, so prompt search reads every task")
    st.caption(f"{len(found.jobs)} matching job(s) on page {page_no}{more} · newest first"
               f"{scanned}")
    st.dataframe(pd.DataFrame([{
        "job": f"job?job_id={j.id}", "name": j.name or "", "tags": ", ".join(j.tags or []),
        "submitted by": j.submitted_by or "", "status": ui.status_label(j.status),
        "progress": j.progress_percentage, "images": j.total_tasks,
        "failed": j.failed_tasks, "created": j.created_at,
    } for j in found.jobs]), key="search_table", hide_index=True, column_config={
        "job": st.column_config.LinkColumn("job", display_text=r"job_id=(.{8})"),
        "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100,
                                                    format="%.0f%%"),
        "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
    })


def labels(job_ids: Sequence[UUID]) -> dict[UUID, search.JobLabel]:
    """Name, tags and submitter of listed jobs, for the Jobs table."""
    return search.job_labels(job_ids, engine=data.engine())


def label_cells(label: search.JobLabel | None) -> dict[str, str]:
    """The Jobs table's name, submitter and tags cells (empty, never "None")."""
    if label is None:
        return {"name": "", "submitted by": "", "tags": ""}
    return {"name": label.name or "", "submitted by": label.submitted_by or "",
            "tags": ", ".join(label.tags)}


# ---- Job -----------------------------------------------------------------------------

def job_header(job: JobView) -> None:
    """Name, submitter and tags, as plain text (a name is typed by whoever submitted)."""
    parts = [f"Name: {job.name}"] if job.name else []
    parts.append(f"submitted by {job.submitted_by or 'unknown'}")
    if job.tags:
        parts.append("tags " + ", ".join(job.tags))
    st.text(" · ".join(parts))


def job_history(job: JobView) -> None:
    """Who did what to this job (audit log): resubmits, clones from it."""
    entries = audit.entries(job_id=job.id, limit=50, engine=data.engine())
    if not entries:
        return
    with st.expander(f"History ({len(entries)})"):
        st.dataframe(pd.DataFrame([{
            "when": e.at, "who": e.actor, "what": e.action.replace("_", " "),
            "detail": ", ".join(f"{k} {v}" for k, v in e.detail.items()),
        } for e in entries]), hide_index=True, column_config={
            "when": st.column_config.DatetimeColumn("when", format="YYYY-MM-DD HH:mm:ss")})


def job_actions(job: JobView) -> None:
    """Clone, and delete after a confirmation (refused while the job runs)."""
    b1, b2, _ = st.columns([1, 1, 2])
    if b1.button("Clone job", key="clone_job", help="A new job with the same prompts and "
                                                   "options"):
        try:
            copy = edit.clone_job(job.id, submitted_by=auth.operator(),
                                      engine=data.engine(), settings=data.settings())
            data.changed()
            ui.flash(f"Cloned as job {ui.short_id(copy.id)} ({copy.total_tasks} task(s)).")
            st.query_params["job_id"] = str(copy.id)
        except AppError as exc:
            ui.flash(exc.message, "error")
        st.rerun()
    if b2.button("Delete job", key="delete_job"):
        st.session_state["confirm_delete"] = str(job.id)
    if st.session_state.get("confirm_delete") != str(job.id):
        return
    if not job.is_finished:
        st.error("This job is still running: cancel it first, then delete it.")
        st.session_state.pop("confirm_delete", None)
        return
    if ui.confirm("confirm_delete", f"Delete this job, its {job.total_tasks} task(s) and every "
                  "image in storage? This cannot be undone; the audit log records who "
                  "deleted it.", yes="Yes, delete it", no="Keep it"):
        try:
            done = retention.delete_job(job.id, actor=auth.operator(), storage=data.storage(),
                                        engine=data.engine())
            data.changed()
            ui.flash(f"Deleted job {ui.short_id(job.id)}: {done.tasks} task(s), "
                     f"{done.objects} stored file(s).")
            st.switch_page(JOBS_PAGE)
        except AppError as exc:
            ui.flash(exc.message, "error")
            st.rerun()


def resubmit_section(job: JobView) -> None:
    """Edit a failed (typically refused) prompt and run it as a new task of this job;
    then the job's history."""
    _resubmit(job)
    job_history(job)


def _resubmit(job: JobView) -> None:
    if job.failed_tasks == 0 or job.status == "cancelled":
        return
    tasks = edit.editable_tasks(job.id, engine=data.engine())
    if not tasks:
        return
    with st.expander(f"Edit and resubmit a refused prompt ({len(tasks)} failed)"):
        by_id = {str(t.id): t for t in tasks}
        chosen = st.selectbox(
            "Failed task", list(by_id), key="resubmit_task",
            format_func=lambda i: (f"#{by_id[i].prompt_index + 1}.{by_id[i].image_index + 1}"
                                   f" · {by_id[i].last_error_code or 'failed'}"
                                   f"{' (refused)' if by_id[i].refused else ''} · "
                                   f"{by_id[i].prompt[:60]}"))
        task = by_id[chosen]
        if task.last_error:
            st.text(f"Why it failed: {task.last_error}")
        edited = st.text_area("Edited prompt", value=task.prompt, key=f"edit_{task.id}")
        st.caption("It runs as one new task of this job (one more image, billed); the "
                   "failed task stays in the history, marked as replaced.")
        if st.button("Resubmit as a new task", key="resubmit", type="primary"):
            try:
                done = edit.resubmit_task(job.id, task.id, edited,
                                              submitted_by=auth.operator(),
                                              engine=data.engine(), settings=data.settings())
                data.changed()
                ui.flash(f"Resubmitted as task {ui.short_id(done.task_id)}.")
            except AppError as exc:
                ui.flash(exc.message, "error")
            st.rerun()
