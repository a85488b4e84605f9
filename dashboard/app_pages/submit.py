"""Submit a batch: prompts pasted or uploaded, style with a preview, images per prompt,
model options, the image count and cost before anything is sent."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from core.billing import prices
from core.errors import InvalidInput
from core.jobs import handover_report, lifecycle
from core.jobs.uploads import (
    PromptSource,
    UploadError,
    csv_first_row,
    from_text,
    from_upload,
    prompt_column,
)
from core.jobs.validation import BatchSpec, limits_from_settings, validate_batch
from core.styles import STYLES, apply_style
from dashboard import data, schedule_widgets, submit_options, team_widgets, ui

PREVIEW_PLACEHOLDER = "a red leather armchair"
_PROMPT_FIELD = re.compile(r"^prompts\[(\d+)\]$")

settings = data.settings()
limits = limits_from_settings(settings)
st.title("Submit a batch")
ui.show_flash()

# ---- prompts -------------------------------------------------------------------------
source_kind = st.radio("Prompts from", ["Paste", "Upload a CSV or TXT file"],
                       horizontal=True, key="source_kind")
source: PromptSource | None = None
if st.session_state.pop("_clear_prompts", False):
    # After a submit, empty the box so a second click cannot send the batch twice.
    st.session_state["prompts_text"] = ""
if source_kind == "Paste":
    text = st.text_area("Prompts, one per line", height=220, key="prompts_text",
                        placeholder="a red leather armchair\na brass desk lamp")
    source = from_text(text or "")
else:
    upload = st.file_uploader(
        "One prompt per row; a CSV with a header row is read from its 'prompt' column",
        type=["csv", "txt"], key=f"prompts_file_{st.session_state.get('_upload_round', 0)}")
    if upload is not None:
        header: bool | None = None
        if upload.name.lower().endswith(".csv"):
            # Ask rather than guess: a header read as a prompt would be billed.
            first = csv_first_row(upload.getvalue())
            header = st.checkbox(
                f"The first row is a header: {', '.join(first)[:80]!r}",
                value=prompt_column(first) is not None, key="csv_header")
        try:
            source = from_upload(upload.name, upload.getvalue(), header=header)
        except UploadError as exc:
            st.error(str(exc))

prompts = source.prompts if source else []
if source and source.lines.blank_lines:
    lines = ", ".join(str(n) for n in source.lines.blank_lines[:20])
    more = " …" if len(source.lines.blank_lines) > 20 else ""
    st.warning(f"{len(source.lines.blank_lines)} blank {source.unit}(s) skipped: "
               f"{source.unit} {lines}{more}")
if source and source.lines.duplicates:
    st.warning(f"{len(source.lines.duplicates)} prompt(s) appear more than once. They are "
               "kept as written (each occurrence is its own prompt); remove them if that "
               "was not meant.")
    st.dataframe(
        pd.DataFrame([(p, ", ".join(map(str, ns)), len(ns))
                      for p, ns in source.lines.duplicates.items()],
                     columns=["prompt", f"{source.unit}s", "times"]),
        hide_index=True, key="duplicates_table")

# ---- style and options ---------------------------------------------------------------
left, right = st.columns(2)
with left:
    style = st.selectbox("Style", list(STYLES), format_func=lambda s: STYLES[s].label,
                         key="style")
    count = int(st.number_input("Images per prompt", min_value=1,
                                max_value=limits.max_count_per_prompt, value=1, step=1,
                                key="count_per_prompt"))
with right:
    st.caption("What the model receives" + ("" if prompts else " (example prompt)"))
    # st.code shows the text verbatim: no Markdown, no HTML.
    st.code(apply_style(style, prompts[0] if prompts else PREVIEW_PLACEHOLDER),
            language=None, wrap_lines=True)

model = size = quality = None
mode = "realtime"
image_choices: dict[str, object] = {}
if settings.provider_name == "openai":
    # Delivery mode, model, options and the confirmations: dashboard/submit_options.py.
    choice = submit_options.render(settings)
    mode, model, size, quality = choice.mode, choice.model, choice.size, choice.quality
    image_choices = choice.options
else:
    st.info("Model: the offline demo model (no key configured). It draws a picture from "
            "each prompt and costs nothing.")


def _message(exc: InvalidInput) -> str:
    """'line 4: at most 4000 characters' rather than 'prompts[3]: ...'."""
    match = _PROMPT_FIELD.match(exc.field)
    detail = exc.message.split(": ", 1)[-1]
    if match and source is not None:
        return f"Prompt on {source.where(int(match.group(1)))}: {detail}"
    return f"{exc.field.replace('_', ' ').capitalize()}: {detail}"


def _check() -> tuple[BatchSpec | None, lifecycle.GenerationOptions | None, str | None]:
    try:
        spec = validate_batch(prompts, style, count, limits)
        options = lifecycle.options_for(settings, model=model, size=size, quality=quality,
                                   mode=mode, **image_choices)  # type: ignore[arg-type]
    except InvalidInput as exc:
        return None, None, _message(exc)
    return spec, options, None


spec, options, problem = _check()
meta, meta_problem = team_widgets.job_fields()
schedule, schedule_problem = schedule_widgets.submit_fields()  # priority and spend cap
problem = problem or meta_problem or schedule_problem

# ---- summary -------------------------------------------------------------------------
images = len(prompts) * count
m1, m2, m3 = st.columns(3)
m1.metric("Prompts", len(prompts))
m2.metric("Images", images)
needs_confirmation: list[str] = []
if options is not None:
    estimate = prices.estimate_cost_usd(options.provider, options.model, options.size,
                                      options.quality, images, mode=options.mode)
    per_image = prices.price_per_image(options.provider, options.model, options.size,
                                     options.quality, mode=options.mode)
    m3.metric("Estimated cost", ui.money(estimate),
              help=f"{ui.money(per_image)} per image ({options.model}, {options.size}, "
                   f"{options.quality}, {options.mode}), from the price table "
                   "(core/billing/prices.csv or PRICES_FILE)")
    if options.provider == "openai":
        submit_options.compare_modes(options, images, settings)
        needs_confirmation = submit_options.confirmations(options, estimate, settings)
if problem and (prompts or meta_problem):
    st.error(problem)
confirmed = True
if needs_confirmation and not problem:
    st.warning("Please confirm before submitting: " + "; ".join(needs_confirmation) + ".")
    confirmed = st.checkbox("I have checked the cost and want to submit", key="confirm_cost")

if st.button(f"Submit {images} image{'s' if images != 1 else ''}", type="primary",
             key="submit", disabled=images == 0 or problem is not None):
    if problem or spec is None or options is None:
        st.error(problem or "Nothing to submit.")
    elif not confirmed:
        st.error("Tick the confirmation above to submit this batch.")
    else:
        submitted = data.submit(spec, options, meta, schedule)
        job = submitted.job
        st.session_state["last_submitted_job"] = (str(job.id), job.total_tasks)
        # Say when the tasks did not reach the queue (Cloud Tasks unreachable).
        st.session_state["last_submit_handover"] = handover_report.submit_message(
            job.total_tasks, submitted.handover,
            sweep_interval_s=data.settings().SWEEP_INTERVAL_S)
        st.session_state["_clear_prompts"] = True
        # A new key gives a new, empty uploader: the same file cannot be sent twice.
        st.session_state["_upload_round"] = st.session_state.get("_upload_round", 0) + 1
        ui.flash(f"Submitted job {job.id} with {job.total_tasks} task(s).")
        if handover_problem := st.session_state["last_submit_handover"]:
            kind, message = handover_problem  # shown on the job page too, not only here
            ui.flash(message, kind)
        # Straight to the job: the operator came to watch it run.
        st.switch_page(ui.JOB_PAGE, query_params={"job_id": str(job.id)})

last = st.session_state.get("last_submitted_job")
if last:
    job_id, total = last
    st.success(f"Submitted job {job_id} with {total} task(s).")
    if handover_problem := st.session_state.get("last_submit_handover"):
        kind, message = handover_problem
        (st.error if kind == "error" else st.warning)(message)
    st.page_link(ui.JOB_PAGE, label=f"Open job {ui.short_id(job_id)}",
                 icon=":material/open_in_new:", query_params={"job_id": job_id})
