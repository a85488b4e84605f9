"""Request dependencies: settings, admin auth, task-delivery auth."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
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


async def require_task_auth(request: Request, settings: SettingsDep) -> None:
    """Who may deliver a task. Never the admin key.

    Cloud Tasks: a Google OIDC token for CLOUD_TASKS_SERVICE_ACCOUNT with audience
    WORKER_URL. Local: the TASK_SECRET header; without one configured (development),
    only loopback clients.
    """
    # Async, so a delivery does not hop through the thread pool for a header compare;
    # only the OIDC check, which may fetch Google's certificates, runs in a thread.
    verifier = getattr(request.app.state, "oidc_verifier", None)
    if verifier is not None:
        await asyncio.to_thread(_check_oidc, verifier, request)
        return
    secret = settings.TASK_SECRET.get_secret_value() if settings.TASK_SECRET else ""
    if secret:
        offered = request.headers.get("x-task-secret")
        if offered is None or not _equal(offered, secret):
            log.warning("task delivery refused: bad shared secret",
                        extra={"action": "task_auth_refused"})
            raise HTTPException(status_code=401, detail="missing or invalid task secret")
        return
    client = request.client.host if request.client else None
    if not _is_loopback(client):
        log.warning("task delivery refused: not loopback and no TASK_SECRET",
                    extra={"action": "task_auth_refused"})
        raise HTTPException(status_code=403, detail="task deliveries are not accepted from here")


def _check_oidc(verifier: Verifier, request: Request) -> None:
    """Production: the Cloud Tasks OIDC token. Missing or invalid -> 401, another
    identity -> 403, certificates unreachable -> 503 (Cloud Tasks retries)."""
    try:
        verifier(request.headers.get("authorization"))
    except (TokenRejected, CertsUnavailable) as exc:
        client = request.client.host if request.client else None
        log.warning("task delivery refused: %s", exc.message,
                    extra={"action": "task_auth_refused", "http_status": exc.status,
                           "client": client,
                           "cloud_task_name": request.headers.get("x-cloudtasks-taskname")})
        headers = {"Retry-After": "5"} if exc.status == 503 else {"WWW-Authenticate": "Bearer"}
        raise HTTPException(status_code=exc.status, detail=exc.message,
                            headers=headers) from None


TaskAuthDep = Depends(require_task_auth)
