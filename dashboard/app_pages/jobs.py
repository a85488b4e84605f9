"""Jobs: recent jobs with progress, duration and cost so far, filtered by status and date;
a burn-up chart of task states over time for the selected jobs."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from core.jobs import reports
from core.status import JOB_STATUSES
from dashboard import data, team_widgets, ui

PAGE_SIZE = 50
DEFAULT_CHART_JOBS = 5
REFRESH_S = 5
# Burn-up order, bottom to top, with each state's colour.
STATES = {"succeeded": "#2e7d32", "failed": "#c62828", "cancelled": "#757575",
          "remaining": "#90caf9"}

st.title("Jobs")
ui.show_flash()
tz = ui.zone()

f1, f2, f3 = st.columns([2, 2, 1])
statuses = f1.multiselect("Status", JOB_STATUSES, key="status_filter",
                          format_func=ui.status_label)
days = f2.date_input("Created between", value=[], key="date_filter", format="YYYY-MM-DD")
after: datetime | None = None
before: datetime | None = None
if isinstance(days, tuple | list) and days:
    # Days as the operator reads them: midnight in their zone, not in UTC.
    after = datetime.combine(days[0], time.min, tzinfo=tz)
    last_day: date = days[1] if len(days) > 1 else days[0]
    before = datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=tz)
page_no = int(f3.number_input("Page", min_value=1, value=1, step=1, key="jobs_page"))
search = team_widgets.search_filters(statuses, after, before)
if search is not None:
    team_widgets.search_results(search, page_no)
    st.stop()

offset = (page_no - 1) * PAGE_SIZE
first_rows, _ = data.recent_jobs(statuses, after, before, PAGE_SIZE, offset)
if not first_rows:
    st.info("No jobs match. Submit a batch on the Submit page.")
    st.page_link(ui.SUBMIT_PAGE, label="Submit a batch", icon=":material/add:")
    st.stop()
live_at_load = any(not r.is_finished for r in first_rows)


def _frame(rows: list[reports.JobReport]) -> pd.DataFrame:
    named = team_widgets.labels([r.id for r in rows])
    return pd.DataFrame(ui.cells({
        "job": f"job?job_id={r.id}",
        **team_widgets.label_cells(named.get(r.id)),
        "status": ui.status_label(r.status),
        "progress": r.progress_percentage,
        "images": r.total_tasks,
        "succeeded": r.completed_tasks,
        "failed": r.failed_tasks,
        "cancelled": r.cancelled_tasks,
        "created": ui.when(r.created_at, tz),
        "duration": ui.duration(r.duration_s),
        "cost so far": ui.money(r.cost_so_far_usd),
        "estimate": ui.money(r.estimated_cost_usd),
        "style": r.style,
        "model": f"{r.model} {r.size} {r.quality}",
    } for r in rows))


def _state_chart(series: pd.DataFrame) -> None:
    if series.empty:
        st.caption("Nothing has finished yet.")
        return
    frame = series.assign(t=ui.wall_clock_ms(series["time"], tz),
                          when=[ui.when(t, tz) for t in series["time"]]).drop(columns="time")
    long = frame.melt(id_vars=["t", "when"], var_name="state", value_name="tasks")
    long["order"] = long["state"].map({s: i for i, s in enumerate(STATES)})
    chart = alt.Chart(long).mark_area(interpolate="step-after").encode(
        x=alt.X("t:T", title=f"time ({ui.zone_label(tz)})", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%H:%M:%S", formatType="utc")),
        y=alt.Y("tasks:Q", stack="zero", title="tasks"),
        color=alt.Color("state:N", scale=alt.Scale(domain=list(STATES),
                                                   range=list(STATES.values())),
                        sort=list(STATES)),
        order=alt.Order("order:Q"),
        tooltip=["when:N", "state:N", "tasks:Q"],
    )
    st.altair_chart(chart, width="stretch")


@st.fragment(run_every=REFRESH_S if live_at_load else None)
@ui.guarded
def jobs_view() -> None:
    """Table and chart refresh together while any listed job runs; selecting rows reruns
    only this part."""
    rows, total = data.recent_jobs(statuses, after, before, PAGE_SIZE, offset)
    pages = max(1, -(-total // PAGE_SIZE))
    st.caption(f"{total} job(s) · page {min(page_no, pages)} of {pages} · times in "
               f"{ui.zone_label(tz)}"
               + (f" · updating every {REFRESH_S} s while jobs run" if live_at_load else ""))
    event = st.dataframe(
        _frame(rows), key="jobs_table", hide_index=True, on_select="rerun",
        selection_mode="multi-row",
        column_config={
            "job": st.column_config.LinkColumn("job", display_text=r"job_id=(.{8})",
                                               help="Open the job"),
            # Progress is how much is done, not how well: never the alarm red of the
            # default primary colour.
            "progress": st.column_config.ProgressColumn("progress", min_value=0,
                                                        max_value=100, format="%.0f%%",
                                                        color="blue"),
        },
    )
    selected = [rows[i] for i in event.selection.rows if i < len(rows)]
    if len(selected) == 1:
        st.page_link(ui.JOB_PAGE, label=f"Open job {ui.short_id(selected[0].id)}",
                     icon=":material/open_in_new:",
                     query_params={"job_id": str(selected[0].id)})
    chart_jobs = selected or rows[:DEFAULT_CHART_JOBS]
    which = "selected" if selected else f"latest {len(chart_jobs)}"
    st.subheader(f"Task states over time ({which} jobs)")
    _state_chart(data.task_state_series([r.id for r in chart_jobs]))
    st.caption("Select rows to chart them; select one row to open it.")
    if live_at_load and all(r.is_finished for r in rows):
        st.rerun()  # all done: one full rerun defines this part again without a timer


jobs_view()
