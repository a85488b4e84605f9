"""Leases: how long a claim holds a task, how often a live handler renews it, and what
happens to a task whose holder stopped (pure: no I/O).

A claim holds a task for ``LEASE_S`` and the handler renews it every ``RENEW_EVERY_S``
while it works, so a holder that dies frees its task within one lease (not the dispatch
deadline), while a live one keeps it for as long as the model takes. Taking over an
abandoned lease counts an attempt: a task that keeps killing its worker fails as
``worker_crashed`` at ``MAX_ATTEMPTS`` instead of taking the worker down forever.

The crash verdict exists twice on purpose: here, and in SQL (claim_task's takeover branch
and take_over_abandoned in core/delivery/tasks.sql). tests/integration/test_leases.py checks the
SQL against this rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from core.config import Settings

# 30 s: short enough that a dead holder's tasks are free again within half a minute (the
# local recovery bound of 45 s after a restart is one lease plus a poll plus the work), long
# enough that two missed renewals (a stalled event loop, a slow database) do not lose it.
LEASE_S = 30.0
# Three renewals per lease. A failed renewal is retried within RENEW_RETRY_S, not at the
# next interval: two failures on the interval schedule put the third try at the very end
# of the lease, where any delay (a loaded machine) lets a redelivery take a live task.
RENEW_EVERY_S = 10.0
RENEW_RETRY_S = 1.0
WORKER_CRASHED = "worker_crashed"


@dataclass(frozen=True)
class CrashVerdict:
    action: Literal["requeue", "fail"]
    crashes: int  # the task's crash count after this one
    message: str | None = None  # for "fail": the task's last_error


def charged_attempts(attempts: int, free_attempts: int) -> int:
    """Attempts that count against MAX_ATTEMPTS (rate limits and graceful stops do not)."""
    return max(attempts - free_attempts, 0)


def crash_verdict(
    *, attempts: int, free_attempts: int, crashes: int, max_attempts: int
) -> CrashVerdict:
    """What to do with a task whose holder stopped during attempt ``attempts``."""
    n = crashes + 1
    if charged_attempts(attempts, free_attempts) >= max_attempts:
        return CrashVerdict("fail", n, crash_message(n))
    return CrashVerdict("requeue", n)


def crash_message(times: int) -> str:
    return f"the worker stopped {times} times during this task"


def renewal_interval_s(lease_s: float, renew_every_s: float | None = None) -> float:
    """How often to renew a lease of ``lease_s``: as configured, but never less than three
    times per lease (a lease shrunk in tests renews proportionally)."""
    third = lease_s / 3.0
    if renew_every_s is None:
        return third
    return min(renew_every_s, third)


def renew_every_s(settings: Settings) -> float:
    """The renewal interval a process with ``settings`` uses."""
    return renewal_interval_s(settings.TASK_LEASE_S, settings.LEASE_RENEW_S)


def renewal_retry_s(renew_every_s: float) -> float:
    """How soon to try again after a failed renewal: a quarter of the interval, at most
    RENEW_RETRY_S (a database that is down is asked about once a second per task)."""
    return min(RENEW_RETRY_S, renew_every_s / 4.0)


def renewal_timeout_s(renew_every_s: float) -> float:
    """How long one renewal may take before it is given up and tried again: half an
    interval. A statement stuck longer (waiting for a pooled connection, a lock, a commit)
    would hold the next try back until the lease is gone; so cut, two stuck tries in a row
    still leave a third before the lease (three intervals) ends."""
    return renew_every_s / 2.0


def worker_owner(
    *, worker_id: str | None, on_cloud_run: bool, hostname: str, port: int, boot: str
) -> tuple[str, bool]:
    """(owner id, stable across restarts?). WORKER_ID when set; else hostname:port, which a
    restarted local process keeps and two processes on one machine do not share. On Cloud
    Run every instance has the same hostname and port, so the owner is per boot there: a
    new instance must never free a live one's tasks."""
    if worker_id:
        return worker_id, True
    if on_cloud_run:
        return f"{hostname}:{port}:{boot}", False
    return f"{hostname}:{port}", True
