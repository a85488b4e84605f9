"""Queue: paused or running, depth by state, deliveries in flight, recent throughput;
pause and resume (Cloud Tasks queue or the local dispatcher, through core)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import AppError
from dashboard import banners, data, schedule_widgets, ui

REFRESH_S = 5
THROUGHPUT_WINDOW_S = 3600

settings = data.settings()
st.title("Queue")
ui.show_flash()
banners.show_problems()  # undeliverable deliveries, provider not authenticated

try:
    paused = data.queue_paused()
except AppError as exc:
    st.error(f"Cannot read the queue state: {exc.message}")
    st.stop()

kind = "Cloud Tasks queue" if settings.USE_CLOUD_TASKS else "Local dispatcher"
if paused:
    st.warning(f"{kind} **{settings.QUEUE_NAME}** is paused: nothing is delivered until "
               "it is resumed. Submitted tasks wait.")
    if st.button("Resume queue", key="resume", type="primary"):
        try:
            data.resume_queue()
            ui.flash("Queue resumed.")
        except AppError as exc:
            ui.flash(f"Could not resume: {exc.message}", "error")
        st.rerun()
else:
    st.success(f"{kind} **{settings.QUEUE_NAME}** is running.")
    if st.button("Pause queue", key="pause"):
        try:
            data.pause_queue()
            ui.flash("Queue paused. Deliveries already in flight finish.", "warning")
        except AppError as exc:
            ui.flash(f"Could not pause: {exc.message}", "error")
        st.rerun()


@st.fragment(run_every=REFRESH_S)
@ui.guarded
def depth_and_throughput() -> None:
    depth = data.queue_depth()
    c = st.columns(6)
    c[0].metric("Waiting to hand over", depth.pending,
                help="Written but not yet given to the queue; the sweeper re-enqueues "
                     "any left behind")
    c[1].metric("Due now", depth.due)
    c[2].metric("Backing off", depth.backing_off,
                help="Waiting for their next attempt after a retryable error")
    in_flight = (f"{depth.in_flight} / {settings.LOCAL_MAX_CONCURRENCY}"
                 if not settings.USE_CLOUD_TASKS else str(depth.in_flight))
    c[3].metric("In flight", in_flight, help="Deliveries holding a live lease")
    c[4].metric("Lease expired", depth.lease_expired,
                help="Running past their lease (a worker died); they are delivered again")
    c[5].metric("Oldest waiting", ui.duration(depth.oldest_waiting_s))

    series = data.recent_throughput(THROUGHPUT_WINDOW_S, 60)
    st.subheader("Finished per minute, last hour")
    if int(series[["succeeded", "failed"]].to_numpy().sum()) == 0:
        st.caption("Nothing finished in the last hour.")
        return
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5)
    recent = series[pd.to_datetime(series["time"], utc=True) >= since]
    st.metric("Images/min (last 5 min)", round(float(recent["succeeded"].sum()) / 5, 1))
    _throughput_chart(series)


@st.fragment(run_every=REFRESH_S)
@ui.guarded
def order_of_work() -> None:
    schedule_widgets.order_table()  # fair share, priority, spend


def _throughput_chart(series: pd.DataFrame) -> None:
    """Bars per minute over the whole hour (empty minutes included), labelled on a
    24-hour clock in the operator's zone."""
    tz = ui.zone()
    frame = series.assign(t=ui.wall_clock_ms(series["time"], tz),
                          minute=[ui.when(t, tz)[11:16] for t in series["time"]])
    long = frame.melt(id_vars=["t", "minute"], value_vars=["succeeded", "failed"],
                      var_name="outcome", value_name="tasks")
    chart = alt.Chart(long).mark_bar().encode(
        x=alt.X("t:T", title=f"minute ({ui.zone_label(tz)})",
                scale=alt.Scale(type="utc", domain=[int(frame["t"].min()),
                                                    int(frame["t"].max()) + 60_000]),
                axis=alt.Axis(format="%H:%M", formatType="utc")),
        y=alt.Y("tasks:Q", stack="zero", title="tasks"),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["succeeded", "failed"],
                                                     range=["#2e7d32", "#c62828"])),
        tooltip=["minute:N", "outcome:N", "tasks:Q"],
    )
    st.altair_chart(chart, width="stretch")


depth_and_throughput()
order_of_work()
