"""Request dependencies: settings, admin auth, task-delivery auth."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from core.config import Settings
from core.dispatch.cloudtasks.oidc import CertsUnavailable, TokenRejected, Verifier

log = logging.getLogger(__name__)


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# Declared as security schemes (not plain header parameters) so the OpenAPI document says
# how to authenticate and clients and fuzzers do not treat the key as ordinary input.
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)
_BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False)


# Recorded as submitted_by when no admin key is configured (development only).
OPEN_CALLER = "anonymous (no API key configured)"


def resolve_key(offered: str, keys: dict[str, str]) -> str | None:
    """The name of the key ``offered`` matches, or None. Every key is compared, in
    constant time, whatever matched: the time taken says nothing about which key (or how
    much of one) was right."""
    found: str | None = None
    for name, key in keys.items():
        if _equal(offered, key) and found is None:
            found = name
    return found


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Security(_API_KEY_HEADER)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
) -> str:
    """Admin endpoints: X-API-Key or Authorization: Bearer, compared in constant time
    against API_KEY ("default") and every API_KEYS entry; returns the key's name. Without
    any key (development only; production refuses to start) they are open."""
    keys = settings.api_keys()
    if not keys:
        return OPEN_CALLER
    offered = x_api_key
    if offered is None and bearer is not None:
        offered = bearer.credentials.strip()
    name = resolve_key(offered, keys) if offered is not None else None
    if name is None:
        raise HTTPException(status_code=401, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return name


AdminDep = Depends(require_api_key)
# The caller's key name, for routes that record who did something (FastAPI resolves the
# dependency once per request, so the router-level check is not repeated).
CallerDep = Annotated[str, Depends(require_api_key)]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A delivery that may not be processed: the answer's status, detail and headers, and
    the reason the log line gives."""

    status: int
    detail: str
    reason: str
    headers: dict[str, str] | None = None


BAD_SECRET = Refusal(401, "missing or invalid task secret", "bad shared secret")
NOT_LOCAL = Refusal(403, "task deliveries are not accepted from here",
                    "not loopback and no TASK_SECRET")


def check_task_delivery(settings: Settings, verifier: Verifier | None, *,
                        secret: str | None, authorization: str | None,
                        client: str | None) -> Refusal | None:
    """Who may deliver a task; None if this one may. Never the admin key. The one check
    behind both the route (require_task_auth) and the fast path (worker/fast_task.py).

    Cloud Tasks in production (a ``verifier``): a Google OIDC token in ``authorization``
    for CLOUD_TASKS_SERVICE_ACCOUNT with audience WORKER_URL; missing or invalid -> 401,
    another identity -> 403, certificates unreachable -> 503 (Cloud Tasks retries). The
    verifier may fetch Google's certificates, so a caller with one runs this in a thread.
    Otherwise: ``secret`` (the X-Task-Secret header) equal to TASK_SECRET; without one
    configured (development), only a loopback ``client``.
    """
    if verifier is not None:
        try:
            verifier(authorization)
        except (TokenRejected, CertsUnavailable) as exc:
            headers = ({"Retry-After": "5"} if exc.status == 503
                       else {"WWW-Authenticate": "Bearer"})
            return Refusal(exc.status, exc.message, exc.message, headers)
        return None
    expected = settings.TASK_SECRET.get_secret_value() if settings.TASK_SECRET else ""
    if expected:
        if secret is None or not _equal(secret, expected):
            return BAD_SECRET
        return None
    return None if _is_loopback(client) else NOT_LOCAL


async def require_task_auth(request: Request, settings: SettingsDep) -> None:
    """The route's side of check_task_delivery: a refusal is logged and answered."""
    verifier: Verifier | None = getattr(request.app.state, "oidc_verifier", None)
    headers = request.headers
    client = request.client.host if request.client else None
    check = partial(check_task_delivery, settings, verifier,
                    secret=headers.get("x-task-secret"),
                    authorization=headers.get("authorization"), client=client)
    # Async, so a delivery does not hop through the thread pool for a header compare;
    # only the OIDC check, which may fetch Google's certificates, runs in a thread.
    refusal = check() if verifier is None else await asyncio.to_thread(check)
    if refusal is not None:
        log.warning("task delivery refused: %s", refusal.reason,
                    extra={"action": "task_auth_refused", "http_status": refusal.status,
                           "client": client,
                           "cloud_task_name": headers.get("x-cloudtasks-taskname")})
        raise HTTPException(status_code=refusal.status, detail=refusal.detail,
                            headers=refusal.headers)


TaskAuthDep = Depends(require_task_auth)
