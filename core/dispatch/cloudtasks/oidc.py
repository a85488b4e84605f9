"""Verifying the OIDC token Cloud Tasks sends with each delivery.

The token is a Google-signed ID token for CLOUD_TASKS_SERVICE_ACCOUNT whose audience is
WORKER_URL. ``google.oauth2.id_token.verify_oauth2_token`` checks signature, expiry,
audience and issuer; we then check the email and ``email_verified``.

Google's signing certificates are fetched at most every CERTS_CACHE_S (they rotate over
days; without a cache every delivery would cost a request to Google). OIDC_CERTS_URL
replaces Google's certificate URL, so tests can serve certificates of their own key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from core.config import Settings
from core.errors import AppError, ConfigError
from core.worker_url import accepted_audiences

CERTS_CACHE_S = 300.0
CLOCK_SKEW_S = 10
# google.oauth2.id_token's certificates URL. google-auth (with cryptography and requests)
# is imported only where a token is verified: a local worker, which never verifies one,
# does not carry it (about 10 MB of its idle memory).
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class TokenRejected(AppError):
    """The delivery's token is missing or invalid."""

    status = 401


class WrongIdentity(TokenRejected):
    """The token is valid but not for the Cloud Tasks service account."""

    status = 403


class CertsUnavailable(AppError):
    """Google's signing certificates cannot be fetched right now."""

    status = 503


class CachingCertsRequest:
    """A google-auth transport that caches the certificates response and can point
    Google's certificate URL elsewhere (OIDC_CERTS_URL)."""

    def __init__(self, certs_url: str | None = None, cache_s: float = CERTS_CACHE_S) -> None:
        self.certs_url = certs_url
        self.cache_s = cache_s
        import google.auth.transport.requests

        self._inner = google.auth.transport.requests.Request()
        self._lock = threading.Lock()
        self._cached: tuple[float, Any] | None = None

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if url != GOOGLE_CERTS_URL or method != "GET":
            return self._inner(url, method=method, **kwargs)
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_s:
                return self._cached[1]
            response = self._inner(self.certs_url or url, method="GET", timeout=10, **kwargs)
            if response.status == 200:
                self._cached = (now, response)
            return response

    def forget(self) -> None:
        """Drop the cached certificates (a token signed by an unknown key: maybe rotated)."""
        with self._lock:
            self._cached = None


Verifier = Callable[[str | None], dict[str, Any]]


def make_verifier(settings: Settings, request: CachingCertsRequest | None = None) -> Verifier:
    """A callable(Authorization header) -> claims; raises TokenRejected (401),
    WrongIdentity (403) or CertsUnavailable (503)."""
    if not settings.WORKER_URL or not settings.CLOUD_TASKS_SERVICE_ACCOUNT:
        raise ConfigError("OIDC verification needs WORKER_URL and CLOUD_TASKS_SERVICE_ACCOUNT")
    # Task URL (what the enqueuer puts in the token) or base URL, whichever form
    # WORKER_URL is written in (core.worker_url).
    audience = accepted_audiences(settings.WORKER_URL)
    account = settings.CLOUD_TASKS_SERVICE_ACCOUNT
    transport = request or CachingCertsRequest(settings.OIDC_CERTS_URL)

    def verify(authorization: str | None) -> dict[str, Any]:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise TokenRejected("missing bearer token")
        token = authorization[7:].strip()
        claims = _verify(token, transport, audience)
        if claims.get("email") != account:
            raise WrongIdentity("token is for another service account")
        if claims.get("email_verified") is not True:
            raise WrongIdentity("token email is not verified")
        return dict(claims)

    return verify


def _verify(token: str, transport: CachingCertsRequest, audience: list[str]) -> Any:
    import google.auth.exceptions
    from google.oauth2 import id_token

    for fresh in (False, True):
        if fresh:
            transport.forget()
        try:
            return id_token.verify_oauth2_token(token, transport, audience=audience,
                                                clock_skew_in_seconds=CLOCK_SKEW_S)
        except google.auth.exceptions.TransportError as exc:
            raise CertsUnavailable("could not fetch the token signing certificates") from exc
        except ValueError as exc:
            # An unknown key id may mean Google rotated its keys: refetch once.
            if not fresh and "Certificate for key id" in str(exc):
                continue
            raise TokenRejected(_reason(exc)) from exc
        except google.auth.exceptions.GoogleAuthError as exc:  # wrong issuer
            raise TokenRejected(_reason(exc)) from exc
    raise TokenRejected("token signed by an unknown key")


def _reason(exc: Exception) -> str:
    """A short reason for logs: never the token itself."""
    text = str(exc).split("\n", 1)[0]
    if "audience" in text.lower():
        return "token audience is not WORKER_URL"
    if "expired" in text.lower() or "too early" in text.lower():
        return "token expired or not yet valid"
    if "issuer" in text.lower():
        return "token issuer is not Google"
    if "signature" in text.lower():
        return "token signature is invalid"
    return "token could not be verified"
