"""Small shared pieces of the pages: formatting (pure) and one-shot messages."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ParamSpec
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core.errors import DatabaseUnavailable

P = ParamSpec("P")

_FLASH_KEY = "_flash"
JOB_PAGE = "app_pages/job.py"
SUBMIT_PAGE = "app_pages/submit.py"


def short_id(job_id: UUID | str) -> str:
    return str(job_id)[:8]


def parse_uuid(value: object) -> UUID | None:
    try:
        return UUID(str(value))
    except (TypeError, ValueError):
        return None


def duration(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '12.3 s'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def money(usd: Decimal | float | None) -> str:
    if usd is None:
        return "unknown"
    value = float(usd)
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    # Sub-dollar amounts keep the digits per-image prices need ($0.005), without noise.
    digits = f"{value:.4f}".rstrip("0")
    return "$" + (digits if len(digits.split(".")[1]) >= 2 else f"{value:.2f}")


def millis(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def pick_zone(setting: str | None, browser: str | None) -> ZoneInfo:
    """The operator's time zone: DASHBOARD_TIMEZONE, else the browser's, else UTC."""
    for name in (setting, browser):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def zone() -> ZoneInfo:
    """This session's zone (st.context.timezone is the browser's, when it told us)."""
    from dashboard import data

    try:
        browser = st.context.timezone
    except Exception:  # outside a browser session (bare script run): no zone known
        browser = None
    return pick_zone(data.settings().DASHBOARD_TIMEZONE, browser)


def when(moment: datetime | None, tz: ZoneInfo) -> str:
    """A timestamp in the operator's zone, whatever zone the database session used to
    return it (psycopg hands timestamptz back in the session's TimeZone)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:  # timestamptz always has one; naive means UTC here
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def zone_label(tz: ZoneInfo) -> str:
    return tz.key


def cells(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows with empty cells left empty: st.dataframe draws a None as the word
    "None". A column with a gap becomes text throughout (one type per column, which
    Arrow needs); columns without gaps keep their type."""
    table = [dict(row) for row in rows]
    gappy = {k for row in table for k, v in row.items() if v is None}
    for row in table:
        for k in gappy:
            row[k] = "" if row[k] is None else str(row[k])
    return table


def status_label(status: str) -> str:
    # Words, not emoji: a server without an emoji font draws emoji as empty boxes.
    return status.replace("_", " ")


def flash(message: str, kind: str = "success") -> None:
    """A message that survives the st.rerun() (or page switch) after an action, shown once;
    several flashed before the next page run are shown in order."""
    st.session_state.setdefault(_FLASH_KEY, []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop(_FLASH_KEY, None) or []:
        {"success": st.success, "warning": st.warning, "error": st.error}.get(kind, st.info)(
            message)


def guarded(render: Callable[P, None]) -> Callable[P, None]:
    """For fragments that refresh themselves: a database outage during a refresh shows a
    notice in place (the next refresh tries again) instead of a traceback."""

    @functools.wraps(render)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            render(*args, **kwargs)
        except DatabaseUnavailable:
            st.warning("The database cannot be reached right now; retrying.")

    return wrapper


def wall_clock_ms(times: Any, tz: ZoneInfo) -> Any:
    """Times (a pandas Series) as milliseconds of the wall clock in ``tz``, for a chart
    drawn on a UTC scale: Vega-Lite would otherwise draw them in the browser's own zone
    (and a label saying UTC would lie) whatever zone the operator chose."""
    import pandas as pd

    stamps = pd.to_datetime(times, utc=True).dt.tz_convert(tz).dt.tz_localize(None)
    return (stamps - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)


ROW_PX = 35  # st.dataframe's row height


def table_height(rows: int, max_rows: int = 50) -> int:
    """Pixels for a table showing ``rows`` rows (and its header) without scrolling."""
    return ROW_PX * (min(max(rows, 1), max_rows) + 1) + 3


def counts_moved(shown: Any, now: Any) -> bool:
    """Whether a job's status or failure count changed since ``shown`` was drawn: the
    page's tabs and retry button carry those, so they must be drawn again."""
    return bool(shown.status != now.status or shown.failed_tasks != now.failed_tasks)


def confirm(state_key: str, question: str, *, yes: str, no: str) -> bool:
    """A destructive action asked about first: the question and two buttons (keys
    ``{state_key}_yes`` / ``_no``). True when confirmed; either answer clears
    ``st.session_state[state_key]``, which the action's first button set."""
    st.warning(question)
    y, n, _ = st.columns([1, 1, 4])
    if y.button(yes, key=f"{state_key}_yes", type="primary"):
        st.session_state.pop(state_key, None)
        return True
    if n.button(no, key=f"{state_key}_no"):
        st.session_state.pop(state_key, None)
        st.rerun()
    return False
