"""Signed, short-lived links to a job's images ZIP, streamed by the worker.

Streamlit (1.67) serves every download from memory, so the dashboard cannot hand over a
10,000-image ZIP without holding it whole. The worker streams it instead
(worker/routes/exports.py); the dashboard links there with a signature the worker checks
(HMAC of job id and expiry), so the browser needs no API key and a link cannot be
reused for another job or after it expires. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode
from uuid import UUID

from core.config import Settings

# Long enough for a page left open a while; the link names one job and nothing else.
LINK_TTL_S = 3600


def signing_key(settings: Settings) -> bytes | None:
    """The secret both services hold: API_KEY, else TASK_SECRET; None in development
    without either (the admin API is open then too)."""
    for secret in (settings.API_KEY, settings.TASK_SECRET):
        if secret is not None and secret.get_secret_value():
            return b"images-zip:" + secret.get_secret_value().encode()
    return None


def signature(key: bytes, job_id: UUID, expires: int) -> str:
    return hmac.new(key, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def zip_path(job_id: UUID) -> str:
    return f"/api/exports/jobs/{job_id}/images.zip"


def zip_link(base_url: str, job_id: UUID, key: bytes | None, *, now: float | None = None,
             ttl_s: int = LINK_TTL_S) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    query = {"expires": expires}
    if key is not None:
        query["sig"] = signature(key, job_id, expires)  # type: ignore[assignment]
    return f"{base_url.rstrip('/')}{zip_path(job_id)}?{urlencode(query)}"


def link_ok(key: bytes | None, job_id: UUID, expires: int, sig: str | None, *,
            now: float | None = None) -> bool:
    """Whether a link is genuine and not expired (constant-time comparison)."""
    if expires < (time.time() if now is None else now):
        return False
    if key is None:
        return True
    return sig is not None and hmac.compare_digest(sig, signature(key, job_id, expires))
