"""Job-end webhooks: a Slack-compatible JSON message, once per job end, from an outbox.

The row is written by a trigger in the transaction that ends the job (so no delivery ever
waits on a webhook); ``send_due`` posts due rows, called by the worker's sender loop
beside the sweeper. A failed POST is retried with exponential backoff up to
WEBHOOK_MAX_ATTEMPTS. Webhook URLs may hold secrets (Slack's do): logs and stored errors
name the host only.

At-least-once, like any webhook: the claim is committed before the POST, so a restart or
a second worker does not send again; only a process killed between the receiver's answer
and the next commit can repeat one message. The body carries an ``X-Idempotency-Key``
header for receivers that deduplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import Engine

from core.config import Settings
from core.db import transaction
from core.db.queries import q
from core.jobs.meta import redact_url

log = logging.getLogger(__name__)

CLAIM_BATCH = 20
USER_AGENT = "AIWebImageService-webhook/1"
_STATUS_WORDS = {"completed": "completed", "completed_with_errors": "completed with errors",
                 "failed": "failed", "cancelled": "was cancelled"}
_EMOJI = {"completed": ":white_check_mark:", "completed_with_errors": ":warning:",
          "failed": ":x:", "cancelled": ":no_entry_sign:"}


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay after failed attempt ``attempt`` (1-based): base, 2x, 4x ... capped."""
    return float(min(max_s, base_s * (2 ** max(attempt - 1, 0))))


def slack_escape(text: str) -> str:
    """Slack mrkdwn's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class JobEnd:
    id: str
    name: str | None
    status: str
    total: int
    succeeded: int
    failed: int
    cancelled: int
    cost_usd: Decimal | None
    submitted_by: str | None = None


def job_url(dashboard_url: str | None, job_id: str) -> str | None:
    if not dashboard_url:
        return None
    return f"{dashboard_url.rstrip('/')}/job?job_id={quote(job_id)}"


def message(end: JobEnd, *, dashboard_url: str | None) -> dict[str, Any]:
    """The JSON body: ``text`` (the notification and fallback) plus blocks (pure)."""
    title = end.name or f"Job {end.id[:8]}"
    words = _STATUS_WORDS.get(end.status, end.status)
    counts = (f"{end.succeeded} succeeded, {end.failed} failed, {end.cancelled} cancelled "
              f"of {end.total}")
    cost = f"${end.cost_usd:.4f}" if end.cost_usd is not None else "cost unknown"
    link = job_url(dashboard_url, end.id)
    text = f"{title} {words}: {counts} · {cost}"
    safe = f"*{slack_escape(title)}* {words}: {counts} · {cost}"
    if link:
        text += f" · {link}"
        safe += f"\n<{link}|Open the job>"
    blocks: list[dict[str, Any]] = [
        {"type": "section",
         "text": {"type": "mrkdwn", "text": f"{_EMOJI.get(end.status, '')} {safe}".strip()}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(
            f"job {end.id}" + (f" · submitted by {end.submitted_by}"
                               if end.submitted_by else ""))}]},
    ]
    return {"text": text, "blocks": blocks}


def _job_end(row: Any) -> JobEnd:
    cost = None
    if row.estimated_cost_usd is not None:
        cost = (Decimal(0) if row.total_tasks == 0 else
                (row.estimated_cost_usd * row.completed_tasks / row.total_tasks)
                .quantize(Decimal("0.0001")))
    return JobEnd(id=str(row.id), name=row.name, status=row.status, total=row.total_tasks,
                  succeeded=row.completed_tasks, failed=row.failed_tasks,
                  cancelled=row.cancelled_tasks, cost_usd=cost,
                  submitted_by=row.submitted_by)


@dataclass
class SendReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0


def send_due(settings: Settings, engine: Engine, client: httpx.Client) -> SendReport:
    """Claim due notifications and post each once; returns what happened."""
    report = SendReport()
    visibility_s = settings.WEBHOOK_TIMEOUT_S + 30.0
    with transaction(engine) as conn:
        claimed = conn.execute(q("notification_claim_due"),
                               {"visibility_s": visibility_s, "limit": CLAIM_BATCH}).all()
    default = (settings.JOB_WEBHOOK_URL.get_secret_value()
               if settings.JOB_WEBHOOK_URL is not None else "")
    for note in claimed:
        with transaction(engine) as conn:
            job = conn.execute(q("notification_job"), {"job_id": note.job_id}).first()
        url = (job.webhook_url if job is not None else None) or default
        if job is None or not url:
            _finish(engine, note, "skipped", "job deleted" if job is None else "no webhook")
            report.skipped += 1
            continue
        error = _post(client, url, message(_job_end(job), dashboard_url=settings.DASHBOARD_URL),
                      key=f"job-end-{note.id}")
        where = redact_url(url)
        if error is None:
            _finish(engine, note, "sent", None)
            report.sent += 1
            log.info("job webhook sent", extra={"action": "webhook_sent",
                                                "job_id": str(note.job_id), "to": where,
                                                "attempt": note.attempts})
        elif note.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            _finish(engine, note, "failed", error)
            report.failed += 1
            log.warning("job webhook given up: %s", error,
                        extra={"action": "webhook_failed", "job_id": str(note.job_id),
                               "to": where, "attempt": note.attempts})
        else:
            delay = backoff_s(note.attempts, base_s=settings.WEBHOOK_RETRY_BASE_S,
                              max_s=settings.WEBHOOK_RETRY_MAX_S)
            with transaction(engine) as conn:
                conn.execute(q("notification_retry"), {"id": note.id, "attempt": note.attempts,
                                                       "error": error, "delay_s": delay})
            report.retried += 1
            log.info("job webhook failed, retrying in %.1f s: %s", delay, error,
                     extra={"action": "webhook_retry", "job_id": str(note.job_id),
                            "to": where, "attempt": note.attempts})
    return report


def _finish(engine: Engine, note: Any, status: str, error: str | None) -> None:
    with transaction(engine) as conn:
        conn.execute(q("notification_done"), {"id": note.id, "attempt": note.attempts,
                                              "status": status, "error": error})


def _post(client: httpx.Client, url: str, body: dict[str, Any], *, key: str) -> str | None:
    """None on a 2xx; otherwise a short reason that never contains the URL."""
    try:
        response = client.post(url, json=body, headers={"User-Agent": USER_AGENT,
                                                         "X-Idempotency-Key": key})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def notifications_of(job_id: Any, engine: Engine) -> list[Any]:
    with transaction(engine) as conn:
        return list(conn.execute(q("notifications_of_job"), {"job_id": job_id}).all())
