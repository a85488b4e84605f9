"""The order of work on the dashboard (Queue page), a job's priority, spend cap
and what it waits for (Job page), priority and cap at submit. Data through core
(core.dispatch.order_of_work, core.jobs.schedule) via dashboard.data."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from core.dispatch.fair import DEFAULT_PRIORITY, PRIORITIES
from core.dispatch.order_of_work import SHARE_WINDOW_S
from core.errors import AppError
from core.jobs.schedule import Schedule, clean_schedule
from dashboard import data, ui


def submit_fields() -> tuple[Schedule, str | None]:
    """Priority and spend cap on the Submit page: (schedule, problem or None)."""
    c1, c2 = st.columns(2)
    priority = c1.selectbox("Priority", PRIORITIES, index=PRIORITIES.index(DEFAULT_PRIORITY),
                            key="priority",
                            help="Higher first (it takes every slot that frees); jobs of one "
                                 "priority share the deliveries equally; a lower one still "
                                 "gets a delivery at least every PRIORITY_STARVATION_S")
    cap = c2.number_input("Spend cap (USD, 0 = none)", min_value=0.0, value=0.0, step=1.0,
                          key="max_cost_usd",
                          help="At the cap the job's tasks wait (they do not fail) until "
                               "the cap is raised")
    try:
        return clean_schedule(priority=priority, max_cost_usd=cap or None), None
    except AppError as exc:
        return Schedule(), exc.message


def order_table() -> None:
    """Queue page: per running job its priority, share of the deliveries finished in the
    last minutes, in flight, waiting, spend and what it waits for."""
    rows = data.order_of_work()
    st.subheader("Order of work")
    if not rows:
        st.caption("No job is running.")
        return
    for reason in sorted({r.waits_for for r in rows if "budget" in r.waits_for}):
        st.warning(reason)  # a budget holds every job it covers
    st.caption(f"Higher priority first; jobs of one priority share equally; a lower-priority "
               f"job still gets a delivery at least every "
               f"{data.settings().PRIORITY_STARVATION_S:g} s. Share: of the tasks finished in "
               f"the last {SHARE_WINDOW_S // 60} minutes.")
    st.dataframe(pd.DataFrame([{
        "job": r.name or ui.short_id(r.id), "priority": r.priority,
        "share": "-" if r.share is None else f"{r.share:.0%}",
        "in flight": r.in_flight, "waiting": r.waiting, "done": f"{r.done} / {r.total}",
        "spent": "-" if r.spent_usd is None else f"${r.spent_usd:.2f}",
        "cap": "-" if r.max_cost_usd is None else f"${r.max_cost_usd:.2f}",
        "waits for": r.waits_for} for r in rows]), hide_index=True, width="stretch")


def job_controls(job_id: object, *, finished: bool) -> None:
    """Job page: what it waits for, its spend, and priority / cap changes while it runs."""
    mine = next((r for r in data.order_of_work() if r.id == str(job_id)), None)
    if mine is not None:
        spent = "-" if mine.spent_usd is None else f"${mine.spent_usd:.2f}"
        cap = "no cap" if mine.max_cost_usd is None else f"cap ${mine.max_cost_usd:.2f}"
        share = "" if mine.share is None else f" · {mine.share:.0%} of recent deliveries"
        line = (f"Priority **{mine.priority}** · spent {spent} ({cap}){share} · "
                f"waits for: {mine.waits_for}")
        if "reached" in mine.waits_for:
            st.warning(line)
        else:
            st.caption(line)
    if finished:
        return
    with st.expander("Priority and spend cap"):
        c1, c2 = st.columns(2)
        current = mine.priority if mine else DEFAULT_PRIORITY
        priority = c1.selectbox("Priority", PRIORITIES, index=PRIORITIES.index(current),
                                key="sched_priority")
        cap_now = mine.max_cost_usd if mine and mine.max_cost_usd is not None else 0.0
        cap = c2.number_input("Spend cap (USD, 0 = none)", min_value=0.0, value=cap_now,
                              step=1.0, key="sched_cap")
        if st.button("Apply", key="sched_apply"):
            try:
                data.set_schedule(job_id, priority=priority,
                                  max_cost_usd=Decimal(str(cap)) if cap else None,
                                  clear_cap=not cap)
                ui.flash(f"Priority {priority}, "
                         + (f"cap ${cap:.2f}." if cap else "no spend cap."))
            except AppError as exc:
                ui.flash(f"Could not change it: {exc.message}", "error")
            st.rerun()
