"""WORKER_URL in either form the operator may write it (pure).

The deployment guide writes the full task URL (``https://svc.run.app/api/admin/worker/
process-task``); earlier code expected the service base URL and appended the path again,
so deliveries went to ``.../process-task/api/admin/worker/process-task`` and got 404.
Both forms are accepted; the enqueuer (task target, OIDC audience), the local dispatcher
and the OIDC verifier all derive their URLs here, so they cannot disagree.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from core.errors import ConfigError

TASK_PATH = "/api/admin/worker/process-task"


def _split(worker_url: str) -> tuple[str, str]:
    raw = worker_url.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "WORKER_URL must be the worker's base URL (https://worker-xyz.run.app) or its "
            f"task URL (https://worker-xyz.run.app{TASK_PATH})")
    path = parts.path.rstrip("/")
    if path.endswith(TASK_PATH):
        path = path[: -len(TASK_PATH)]
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base, base + TASK_PATH


def base_url(worker_url: str) -> str:
    """The service base URL: no trailing slash, no task path."""
    return _split(worker_url)[0]


def task_url(worker_url: str) -> str:
    """Where deliveries go: the base URL plus the task path, exactly once."""
    return _split(worker_url)[1]


def oidc_audience(worker_url: str) -> str:
    """The audience the enqueuer asks Cloud Tasks to put in its OIDC token: the service
    base URL, whichever form WORKER_URL is written in. It is what Cloud Run's own
    invoker check accepts for the service, and what this worker's verifier expects."""
    return base_url(worker_url)


def accepted_audiences(worker_url: str) -> list[str]:
    """What the verifier accepts: the base URL (what we enqueue), and the task URL, which
    Cloud Tasks uses when a task was created without an explicit audience (gcloud, other
    tools)."""
    base, task = _split(worker_url)
    return [base, task]
