"""Job detail: live progress, throughput and latency, gallery, failures, tasks; retry,
cancel and exports. Prompts are shown verbatim (st.text / table cells), never as
Markdown or HTML."""

from __future__ import annotations

from uuid import UUID

import pandas as pd
import streamlit as st

from core.errors import AppError, NotFound
from core.jobs import lifecycle
from core.jobs.handover_report import handover_message
from core.status import TASK_STATUSES
from dashboard import banners, batch_section, data, schedule_widgets, team_widgets, ui

REFRESH_S = 2
GALLERY_COLUMNS = 4
FAILURES_PAGE = 50
TASKS_PAGE = 100
ALL_CODES = "All error codes"

ui.show_flash()


def _pick_job() -> UUID | None:
    chosen = ui.parse_uuid(st.query_params.get("job_id"))
    if chosen is not None:
        return chosen
    ids = data.recent_job_ids()
    st.title("Job detail")
    if not ids:
        st.info("No jobs yet.")
        return None
    pick = st.selectbox("Job", [str(i) for i in ids], index=None, key="job_picker",
                        placeholder="Choose a recent job")
    if pick:
        st.query_params["job_id"] = pick
        st.rerun()
    return None


def ui_handover(result: lifecycle.RetryResult, what: str) -> tuple[str, str]:
    """The retry's own words, unless the queue hand-over failed: then what
    really happened, and that the sweeper will hand the rest over."""
    if result.handover is None or result.handover.failed == 0:
        return result.message(), "success" if result.requeued else "info"
    kind, message = handover_message(result.requeued, result.handover, what,
                                     sweep_interval_s=data.settings().SWEEP_INTERVAL_S)
    return message, kind


job_id = _pick_job()
if job_id is None:
    st.stop()
try:
    job = data.job(job_id)
except NotFound:
    st.error(f"No job {job_id}.")
    st.stop()

tz = ui.zone()
st.title(f"Job {ui.short_id(job.id)}")
st.caption(f"{job.id} · style {job.style} · {job.count_per_prompt} per prompt · "
           f"{job.provider}/{job.model} {job.size} {job.quality} · "
           f"created {ui.when(job.created_at, tz)} {ui.zone_label(tz)}")
team_widgets.job_header(job)
running_at_load = not job.is_finished
banners.show_problems()  # undeliverable deliveries, provider not authenticated
batch_section.cost_line(job)


@st.fragment(run_every=REFRESH_S if running_at_load else None)
@ui.guarded
def live_progress() -> None:
    now = data.job(job.id)
    if ui.counts_moved(job, now):
        # The tabs and buttons below were drawn from the job as it was at the start of
        # this run; a failure count or status that moved since makes them wrong
        # ("2 failed" over "Failures (0)"), so draw the whole page again.
        st.rerun()
    perf = data.performance(job.id)
    st.progress(min(int(now.progress_percentage), 100),
                text=f"{ui.status_label(now.status)} · {now.progress_percentage:.1f}% · "
                     f"{now.completed_tasks} succeeded, {now.failed_tasks} failed, "
                     f"{now.cancelled_tasks} cancelled of {now.total_tasks}")
    c = st.columns(6)
    c[0].metric("Images/min", perf.images_per_min if perf.images_per_min is not None else "-",
                help="Succeeded images per minute of the job's active time, from the "
                     "first start to the last finish (or now, while it runs)")
    c[1].metric("Last 5 min", perf.recent_images_per_min or 0.0,
                help="Images per minute, the same measure over the job's active time "
                     "within the last five minutes")
    c[2].metric("p50 latency", ui.millis(perf.p50_ms))
    c[3].metric("p90 latency", ui.millis(perf.p90_ms))
    c[4].metric("p99 latency", ui.millis(perf.p99_ms))
    c[5].metric("Retrying", perf.retrying,
                help="Tasks waiting for another attempt after a retryable error")
    if running_at_load:
        st.caption(f"Updating every {REFRESH_S} s while the job runs.")


live_progress()
schedule_widgets.job_controls(job.id, finished=job.is_finished)  # priority and spend cap


@st.fragment(run_every=REFRESH_S * 3 if running_at_load and job.mode == "batch" else None)
@ui.guarded
def batches_live() -> None:
    batch_section.batches(job)


batches_live()

# ---- actions -------------------------------------------------------------------------
a1, a2, a3, a4 = st.columns(4)
include_refusals = False
preview = None
if job.failed_tasks and job.status != "cancelled":
    include_refusals = a1.checkbox(
        "Include refusals", key="retry_include_refusals",
        help="Moderation refusals and invalid requests fail the same way again (and may "
             "be billed again); edit such prompts instead.")
    preview = data.retry_preview(job.id, include_refusals)
retry_n = preview.requeued if preview is not None else 0
if a1.button(f"Retry all failed ({retry_n})", key="retry_all",
             disabled=retry_n == 0 or job.status == "cancelled"):
    try:
        result = data.retry_failed(job.id, None, include_refusals=include_refusals)
        ui.flash(*ui_handover(result, "failed"))  # what the queue really did
    except AppError as exc:
        ui.flash(exc.message, "error")
    st.rerun()
if preview is not None:
    a1.caption(preview.message())
if a2.button("Cancel job", key="cancel", disabled=job.is_finished):
    st.session_state["confirm_cancel"] = str(job.id)
a3.download_button("Task table (CSV)", data=data.tasks_csv(job.id),
                   file_name=f"job-{job.id}-tasks.csv", mime="text/csv", on_click="ignore",
                   key="export_csv")
zip_link = data.images_zip_link(job.id)
if zip_link:
    # Streamed by the worker: Streamlit would hold the whole ZIP in memory to serve it.
    a4.link_button("Images (ZIP)", zip_link, disabled=job.completed_tasks == 0,
                   help="Every image and manifest.csv (prompt, styled prompt, model, size, "
                        "quality, cost per image), streamed by the worker")
else:
    a4.download_button("Images (ZIP)", data=data.images_zip(job.id),
                       file_name=f"job-{job.id}-images.zip", mime="application/zip",
                       on_click="ignore", key="export_zip",
                       disabled=job.completed_tasks == 0,
                       help="Built in the dashboard's memory; set WORKER_URL to have the "
                            "worker stream it instead")
if st.session_state.get("confirm_cancel") == str(job.id) and not job.is_finished:
    if ui.confirm("confirm_cancel", "Cancel this job? Tasks not yet started are cancelled; "
                  "tasks already running finish and keep their result.",
                  yes="Yes, cancel the job", no="Keep it running"):
        try:
            cancelled = data.cancel(job.id)
            ui.flash(f"Job cancelled: {cancelled.cancelled_tasks} task(s) will not run.")
        except AppError as exc:
            ui.flash(exc.message, "error")
        st.rerun()

team_widgets.job_actions(job)
team_widgets.resubmit_section(job)

gallery_tab, failures_tab, tasks_tab = st.tabs(
    [f"Gallery ({job.completed_tasks})", f"Failures ({job.failed_tasks})", "All tasks"])


@st.dialog("Image", width="large")
def full_image(key: str, prompt: str, task_id: str) -> None:
    source = data.try_image_source(key)
    if source is None:
        st.error("The image cannot be read from storage.")
    else:
        st.image(source, width="stretch")
    st.text(prompt)
    st.caption(f"task {task_id}")


@st.fragment(run_every=REFRESH_S * 3 if running_at_load else None)
@ui.guarded
def gallery() -> None:
    g1, g2 = st.columns([1, 3])
    per_page = int(g1.selectbox("Per page", [12, 24, 48], index=1, key="gallery_size"))
    page_no = int(g2.number_input("Page", min_value=1, value=1, step=1, key="gallery_page"))
    items, total = data.gallery(job.id, per_page, (page_no - 1) * per_page)
    pages = max(1, -(-total // per_page))
    st.caption(f"{total} image(s) · page {min(page_no, pages)} of {pages}")
    for start in range(0, len(items), GALLERY_COLUMNS):
        cols = st.columns(GALLERY_COLUMNS)
        for col, item in zip(cols, items[start:start + GALLERY_COLUMNS], strict=False):
            with col:
                thumb = data.try_image_source(item.thumbnail_path)
                if thumb is None:
                    st.caption("thumbnail unavailable")
                else:
                    st.image(thumb, width="stretch")
                st.text(item.prompt)
                st.caption(f"#{item.prompt_index + 1}.{item.image_index + 1} · "
                           f"{ui.millis(item.latency_ms)} · attempt {item.attempts}")
                if item.image_path and st.button("Full size", key=f"full_{item.id}"):
                    full_image(item.image_path, item.prompt, str(item.id))


@st.fragment(run_every=REFRESH_S * 3 if running_at_load else None)
@ui.guarded
def failures() -> None:
    codes = data.error_codes(job.id)
    if not codes:
        st.caption("No failed tasks.")
        return
    f1, f2 = st.columns([2, 1])
    labels = {ALL_CODES: ALL_CODES, **{code: f"{code} ({n})" for code, n in codes}}
    chosen = f1.selectbox("Error code", list(labels), format_func=labels.__getitem__,
                          key="error_code_filter")
    code = None if chosen == ALL_CODES else chosen
    page_no = int(f2.number_input("Page", min_value=1, value=1, step=1, key="failures_page"))
    rows, total = data.failures(job.id, code, FAILURES_PAGE, (page_no - 1) * FAILURES_PAGE)
    pages = max(1, -(-total // FAILURES_PAGE))
    st.caption(f"{total} failed task(s) · page {min(page_no, pages)} of {pages} · times "
               f"in {ui.zone_label(tz)}")
    frame = pd.DataFrame(ui.cells({
        "prompt": r.prompt, "error code": r.last_error_code, "message": r.last_error,
        "attempts": r.attempts, "last attempt": ui.when(r.last_attempt_at, tz),
        # The short id: the full one would not fit beside the rest (All tasks has it).
        "#": f"{r.prompt_index + 1}.{r.image_index + 1}", "task": ui.short_id(r.id),
    } for r in rows))
    # Tall enough for the whole page of rows, and every column inside the page's width:
    # the default ten-row box cut the page off, and auto-sized prompt and message
    # columns pushed the attempts, time and task columns out of sight.
    event = st.dataframe(
        frame, key="failures_table", hide_index=True, on_select="rerun",
        selection_mode="multi-row", height=ui.table_height(len(rows)), width="stretch",
        column_config={"prompt": st.column_config.TextColumn(width="medium"),
                       "message": st.column_config.TextColumn(width="medium"),
                       "#": st.column_config.TextColumn(width="small"),
                       "attempts": st.column_config.NumberColumn(width="small"),
                       "task": st.column_config.TextColumn(width="small")})
    picked = [rows[i].id for i in event.selection.rows if i < len(rows)]
    if st.button(f"Retry selected ({len(picked)})", key="retry_selected",
                 disabled=not picked or job.status == "cancelled"):
        try:
            # Chosen one by one: the operator asked for these, refusals included.
            result = data.retry_failed(job.id, picked, include_refusals=True)
            ui.flash(*ui_handover(result, "selected"))
        except AppError as exc:
            ui.flash(exc.message, "error")
        st.rerun(scope="app")


def all_tasks() -> None:
    t1, t2 = st.columns([2, 1])
    status = t1.selectbox("Status", ["all", *TASK_STATUSES], key="task_status_filter")
    page_no = int(t2.number_input("Page", min_value=1, value=1, step=1, key="tasks_page"))
    rows, total = data.tasks(job.id, None if status == "all" else status, TASKS_PAGE,
                             (page_no - 1) * TASKS_PAGE)
    pages = max(1, -(-total // TASKS_PAGE))
    st.caption(f"{total} task(s) · page {min(page_no, pages)} of {pages}")
    st.dataframe(pd.DataFrame(ui.cells({
        "#": f"{t.prompt_index + 1}.{t.image_index + 1}", "prompt": t.prompt,
        "status": t.status, "attempts": t.attempts, "error code": t.last_error_code,
        "latency ms": t.latency_ms,
        f"finished ({ui.zone_label(tz)})": ui.when(t.finished_at, tz), "task": str(t.id),
    } for t in rows)), hide_index=True, key="tasks_table")


with gallery_tab:
    gallery()
with failures_tab:
    failures()
with tasks_tab:
    all_tasks()
