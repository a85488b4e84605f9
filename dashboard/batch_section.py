"""The Job page's cost line (estimate beside what was billed) and, for batch-mode jobs,
its "Batches" section: each OpenAI batch's state and request counts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.batch.views import job_batches
from core.billing import charges
from core.jobs import views
from dashboard import data, ui


def cost_line(job: views.JobView) -> None:
    billed = charges.job_cost(job.id, job.model, job.provider, engine=data.engine())
    if billed.actual_usd is None and billed.billed_tasks:
        actual = (f"{billed.input_tokens:,} input + {billed.output_tokens:,} output tokens "
                  "(no rate known for this model)")
    else:
        actual = ui.money(billed.actual_usd)
    st.caption(f"Delivery: {job.mode} · estimated {ui.money(job.estimated_cost_usd)} · "
               f"billed so far {actual} for {billed.billed_tasks} image(s)")


def batches(job: views.JobView) -> None:
    if job.mode != "batch":
        return
    st.subheader("Batches")
    found = job_batches(job.id, engine=data.engine())
    if not found:
        st.caption("No batch yet: the poller groups the tasks into batches shortly.")
        return
    tz = ui.zone()
    label = ui.zone_label(tz)
    st.dataframe(pd.DataFrame([{
        "state": b.label, "requests": b.task_count,
        "completed": b.request_completed if b.request_completed is not None else "-",
        "failed": b.request_failed if b.request_failed is not None else "-",
        "openai batch": b.openai_batch_id or "-",
        # The operator's zone, labelled, as everywhere on the dashboard.
        f"created ({label})": ui.when(b.created_at, tz),
        f"finished ({label})": ui.when(b.finished_at, tz), "error": b.last_error or "",
    } for b in found]), hide_index=True, key="batches_table")
