"""The lease rules (core.delivery.leases): a table of cases, one per line."""

from __future__ import annotations

import pytest

from core.delivery.leases import (
    LEASE_S,
    RENEW_EVERY_S,
    crash_message,
    crash_verdict,
    renewal_interval_s,
    renewal_retry_s,
    renewal_timeout_s,
    worker_owner,
)


@pytest.mark.parametrize(
    ("attempts", "free", "crashes", "max_attempts", "action", "crashes_after"),
    [
        (1, 0, 0, 5, "requeue", 1),  # first attempt's holder died: deliver again
        (4, 0, 3, 5, "requeue", 4),  # attempt 4 died: one charged attempt left
        (5, 0, 4, 5, "fail", 5),  # attempt 5 died: the task is what kills the worker
        (6, 2, 1, 5, "requeue", 2),  # 2 attempts were given back (rate limits, stops)
        (7, 2, 4, 5, "fail", 5),  # 5 charged
        (1, 0, 0, 1, "fail", 1),  # MAX_ATTEMPTS=1: the first crash is the last
        (9, 0, 0, 5, "fail", 1),  # over the limit (queue counted more): fail
    ],
)
def test_crash_verdict(attempts: int, free: int, crashes: int, max_attempts: int, action: str,
                       crashes_after: int) -> None:
    verdict = crash_verdict(attempts=attempts, free_attempts=free, crashes=crashes,
                            max_attempts=max_attempts)
    assert (verdict.action, verdict.crashes) == (action, crashes_after)
    if action == "fail":
        assert verdict.message == f"the worker stopped {crashes_after} times during this task"
    else:
        assert verdict.message is None


def test_crash_message_names_the_count() -> None:
    assert crash_message(3) == "the worker stopped 3 times during this task"


@pytest.mark.parametrize(
    ("lease_s", "renew_s", "expected_s"),
    [
        (LEASE_S, RENEW_EVERY_S, 10.0),  # the defaults: three renewals per lease
        (30.0, 5.0, 5.0),  # more often is fine
        (3.0, 10.0, 1.0),  # a lease shrunk in tests renews proportionally
        (30.0, None, 10.0),  # unset: a third of the lease
    ],
)
def test_renewal_interval(lease_s: float, renew_s: float | None, expected_s: float) -> None:
    assert renewal_interval_s(lease_s, renew_s) == expected_s


@pytest.mark.parametrize(
    ("renew_s", "retry_s"),
    [
        (RENEW_EVERY_S, 1.0),  # the defaults: once a second, nine tries before the lease ends
        (2.0, 0.5),  # a short lease (tests): a quarter of the interval
    ],
)
def test_a_failed_renewal_is_retried_well_before_the_next_interval(renew_s: float,
                                                                   retry_s: float) -> None:
    assert renewal_retry_s(renew_s) == retry_s
    # Two failures in a row, each given up after at most the timeout: the third try still
    # comes before the lease (three intervals) ends, with a retry pause to spare.
    two_failures_s = renew_s + 2 * (renewal_timeout_s(renew_s) + retry_s)
    assert two_failures_s + retry_s <= 3 * renew_s, two_failures_s


@pytest.mark.parametrize(
    ("worker_id", "cloud_run", "owner", "stable"),
    [
        ("w-1", False, "w-1", True),  # set by the operator: used as is
        (None, False, "host:8080", True),  # local: survives a restart, differs per port
        (None, True, "host:8080:b1", False),  # Cloud Run: shared host:port, so per boot
        ("w-1", True, "w-1", True),  # an operator's id wins on Cloud Run too
    ],
)
def test_worker_owner(worker_id: str | None, cloud_run: bool, owner: str, stable: bool) -> None:
    assert worker_owner(worker_id=worker_id, on_cloud_run=cloud_run, hostname="host", port=8080,
                        boot="b1") == (owner, stable)
