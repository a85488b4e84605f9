"""The Retry-After a delivery's answer carries (core.delivery.processing.DeliveryOutcome)."""

from __future__ import annotations

import pytest

from core.delivery.processing import DeliveryOutcome


@pytest.mark.parametrize(("seconds", "header"), [
    (None, None),
    (19.2, "20"),  # rounded up: a sender that waits this long finds the task due
    (19.5, "20"),
    (20.0, "20"),
    (0.3, "1"),  # at least one second
    (0.0, "1"),
])
def test_retry_after_header_rounds_up_to_whole_seconds(seconds: float | None,
                                                        header: str | None) -> None:
    outcome = DeliveryOutcome(503, "not_due", "t", retry_after_s=seconds)
    assert outcome.retry_after_header() == header
