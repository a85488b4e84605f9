"""What a dashboard action really did to the queue (pure).

In Cloud Tasks mode "Retry failed" resets rows and then hands them to Cloud Tasks; when
the queue cannot be reached the rows stay pending for the sweeper. The message says so,
with the error, instead of "Requeued N task(s)" for tasks that never reached the queue.
"""

from __future__ import annotations

from core.dispatch.base import EnqueueResult


def submit_message(total: int, handover: EnqueueResult | None,
                   *, sweep_interval_s: float) -> tuple[str, str] | None:
    """(kind, message) when a submitted batch did not fully reach the queue, else None."""
    if handover is None or handover.failed == 0:
        return None
    error = handover.errors[0] if handover.errors else "unknown error"
    return ("error" if handover.failed >= total else "warning",
            f"{handover.failed} of {total} task(s) could not be handed to the queue "
            f"({error}). They wait as pending for the sweeper, which retries every "
            f"{int(sweep_interval_s)} s.")


def handover_message(requeued: int, handover: EnqueueResult | None, what: str,
                     *, sweep_interval_s: float) -> tuple[str, str]:
    """(kind, message) for ui.flash: success | warning | error."""
    if requeued == 0:
        return "info", f"No {what} task(s) to retry."
    if handover is None or handover.failed == 0:
        return "success", f"Requeued {requeued} {what} task(s)."
    handed = requeued - handover.failed
    error = handover.errors[0] if handover.errors else "unknown error"
    return ("error" if handed == 0 else "warning",
            f"Reset {requeued} {what} task(s), but {handover.failed} could not be handed "
            f"to the queue ({error}). They wait as pending for the sweeper, which retries "
            f"every {int(sweep_interval_s)} s; {handed} reached the queue.")
