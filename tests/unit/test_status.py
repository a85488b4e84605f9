from __future__ import annotations

import pytest

from core.status import job_status_after, progress_percentage


@pytest.mark.parametrize(
    ("current", "counts", "expected"),
    [
        ("pending", (3, 0, 0, 0), "pending"),  # nothing finished yet
        ("running", (3, 0, 0, 0), "running"),  # started, nothing finished
        ("pending", (3, 1, 0, 0), "running"),  # a finished task means it runs
        ("running", (3, 3, 0, 0), "completed"),  # all succeeded
        ("running", (3, 2, 1, 0), "completed_with_errors"),
        ("running", (3, 0, 3, 0), "failed"),  # nothing succeeded
        ("cancelled", (3, 3, 0, 0), "cancelled"),  # cancelled is sticky
        ("running", (3, 1, 0, 2), "completed_with_errors"),
        ("completed_with_errors", (3, 2, 0, 0), "running"),  # retry-failed reopened it
    ],
)
def test_job_status_rule(current: str, counts: tuple[int, int, int, int], expected: str) -> None:
    total, completed, failed, cancelled = counts
    assert job_status_after(current, total=total, completed=completed, failed=failed,
                            cancelled=cancelled) == expected


def test_progress_percentage() -> None:
    assert progress_percentage(total=3, completed=1, failed=0, cancelled=0) == 33.3
    assert progress_percentage(total=2, completed=1, failed=1, cancelled=0) == 100.0
    assert progress_percentage(total=0, completed=0, failed=0, cancelled=0) == 100.0
