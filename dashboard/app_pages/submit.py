"""Submit a batch: prompts pasted or uploaded, style with a preview, images per prompt,
model options, the image count and cost before anything is sent."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from core import cost, jobs
from core.errors import InvalidInput
from core.styles import STYLES, apply_style
from core.validation import BatchSpec, limits_from_settings, validate_batch
from dashboard import data, team_widgets, ui
from dashboard.uploads import PromptSource, UploadError, from_text, from_upload

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
        try:
            source = from_upload(upload.name, upload.getvalue())
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
if settings.provider_name == "openai":
    c1, c2, c3 = st.columns(3)
    default_model = settings.OPENAI_IMAGE_MODEL
    model = c1.selectbox("Model", cost.MODELS, key="model",
                         index=cost.MODELS.index(default_model)
                         if default_model in cost.MODELS else 0)
    sizes = [*cost.SIZES, "auto"]
    size = c2.selectbox("Size", sizes, key="size",
                        index=sizes.index(settings.OPENAI_IMAGE_SIZE)
                        if settings.OPENAI_IMAGE_SIZE in sizes else 0)
    qualities = [*cost.QUALITIES, "auto"]
    quality = c3.selectbox("Quality", qualities, key="quality",
                           index=qualities.index(settings.OPENAI_IMAGE_QUALITY)
                           if settings.OPENAI_IMAGE_QUALITY in qualities else 0)
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


def _check() -> tuple[BatchSpec | None, jobs.GenerationOptions | None, str | None]:
    try:
        spec = validate_batch(prompts, style, count, limits)
        options = jobs.options_for(settings, model=model, size=size, quality=quality)
    except InvalidInput as exc:
        return None, None, _message(exc)
    return spec, options, None


spec, options, problem = _check()
meta, meta_problem = team_widgets.job_fields()
problem = problem or meta_problem

# ---- summary -------------------------------------------------------------------------
images = len(prompts) * count
m1, m2, m3 = st.columns(3)
m1.metric("Prompts", len(prompts))
m2.metric("Images", images)
if options is not None:
    estimate = cost.estimate_cost_usd(options.provider, options.model, options.size,
                                      options.quality, images)
    per_image = cost.price_per_image(options.provider, options.model, options.size,
                                     options.quality)
    m3.metric("Estimated cost", ui.money(estimate),
              help=f"{ui.money(per_image)} per image ({options.model}, {options.size}, "
                   f"{options.quality}), from the price table in core/cost.py")
if problem and (prompts or meta_problem):
    st.error(problem)

if st.button(f"Submit {images} image{'s' if images != 1 else ''}", type="primary",
             key="submit"):
    if problem or spec is None or options is None:
        st.error(problem or "Nothing to submit.")
    else:
        job = data.submit(spec, options, meta)
        st.session_state["last_submitted_job"] = (str(job.id), job.total_tasks)
        st.session_state["_clear_prompts"] = True
        # A new key gives a new, empty uploader: the same file cannot be sent twice.
        st.session_state["_upload_round"] = st.session_state.get("_upload_round", 0) + 1
        st.rerun()

last = st.session_state.get("last_submitted_job")
if last:
    job_id, total = last
    st.success(f"Submitted job {job_id} with {total} task(s).")
    st.page_link(ui.JOB_PAGE, label=f"Open job {ui.short_id(job_id)}",
                 icon=":material/open_in_new:", query_params={"job_id": job_id})
