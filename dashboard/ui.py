"""Small shared pieces of the pages: formatting (pure) and one-shot messages."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import ParamSpec
from uuid import UUID

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


def status_label(status: str) -> str:
    # Words, not emoji: a server without an emoji font draws emoji as empty boxes.
    return status.replace("_", " ")


def flash(message: str, kind: str = "success") -> None:
    """A message that survives the st.rerun() after an action, shown once."""
    st.session_state[_FLASH_KEY] = (kind, message)


def show_flash() -> None:
    pending = st.session_state.pop(_FLASH_KEY, None)
    if not pending:
        return
    kind, message = pending
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
