"""Job status rules: pure functions of a job's counters.

pending -> running -> completed | completed_with_errors | failed, or cancelled.
"""

from __future__ import annotations

from typing import Final

JOB_STATUSES: Final = (
    "pending", "running", "completed", "completed_with_errors", "failed", "cancelled",
)
JOB_TERMINAL: Final = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
TASK_STATUSES: Final = ("pending", "queued", "running", "succeeded", "failed", "cancelled")
TASK_TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})


def job_status_after(
    current: str, *, total: int, completed: int, failed: int, cancelled: int
) -> str:
    """The status a job should have given its counters.

    Cancelled is sticky: tasks that were already running when the operator cancelled still
    finish and are counted, but the job stays cancelled.
    """
    if current == "cancelled":
        return "cancelled"
    done = completed + failed + cancelled
    if done < total:
        return "pending" if current == "pending" and done == 0 else "running"
    if failed == 0 and cancelled == 0:
        return "completed"
    if completed == 0:
        return "failed"
    return "completed_with_errors"


def progress_percentage(*, total: int, completed: int, failed: int, cancelled: int) -> float:
    """Share of tasks that reached an end, 0-100, rounded to one decimal."""
    if total <= 0:
        return 100.0
    return round(100.0 * (completed + failed + cancelled) / total, 1)
