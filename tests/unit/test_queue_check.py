"""What the worker says at start about the queue's retry config
(core.dispatch.cloudtasks.queue_check, pure): Cloud Tasks' schedule, and the warnings for
a queue that drops undelivered tasks too early or can keep one waiting too long."""

from __future__ import annotations

import logging

from core.dispatch.cloudtasks.queue_check import RetryShape, drop_after_s, judge, queue_delay_s

GCLOUD_DEFAULTS = RetryShape(max_attempts=100, min_backoff_s=0.1, max_backoff_s=3600,
                             max_doublings=16)
CLI = RetryShape(max_attempts=100, min_backoff_s=1, max_backoff_s=300, max_doublings=5)


def test_schedule_is_the_retry_config_reference_example() -> None:
    shape = RetryShape(max_attempts=9, min_backoff_s=10, max_backoff_s=300, max_doublings=3)
    assert [queue_delay_s(shape, k) for k in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300,
                                                               300]
    assert drop_after_s(shape) == 10 + 20 + 40 + 80 + 160 + 240 + 300 + 300


def test_the_cli_queue_is_one_info_line() -> None:
    level, line = judge("images", CLI, stranded_after_s=1800)
    assert level == logging.INFO
    assert line == ("queue images: max_attempts 100, backoff 1\u2013300 s, max_doublings 5: "
                    "transport retries only (undelivered tasks kept about 7.5 h); task "
                    "retries are scheduled by the worker")


def test_the_gcloud_default_queue_warns_that_an_undelivered_task_may_wait_an_hour() -> None:
    level, line = judge("images", GCLOUD_DEFAULTS, stranded_after_s=1800)
    assert level == logging.WARNING
    assert "max_attempts 100, backoff 0.1\u20133600 s" in line
    assert "may wait up to 60 min" in line and "about 27 min" in line


def test_a_queue_that_drops_within_minutes_warns_too_early() -> None:
    old = RetryShape(max_attempts=7, min_backoff_s=1, max_backoff_s=300, max_doublings=5)
    level, line = judge("images", old, stranded_after_s=1800)
    assert level == logging.WARNING
    assert "after about 63 s" in line and "STRANDED_AFTER_S 1800 s" in line


def test_unlimited_attempts_never_drop() -> None:
    shape = RetryShape(max_attempts=-1, min_backoff_s=1, max_backoff_s=60, max_doublings=5)
    assert drop_after_s(shape) is None
    assert judge("q", shape, stranded_after_s=1800)[0] == logging.INFO
