"""OpenAI's images API (``client.images.generate``) as an ImageProvider.

The SDK's own retries are off (``max_retries=0``): the queue retries, so every attempt is
one HTTP call and one counted attempt. SDK errors become one TaskFailure through
core.classify: 429 keeps ``retry-after``; timeouts, connection errors and 5xx retry; a
moderation refusal (400 ``moderation_blocked``) and other invalid requests are final;
a wrong key is final and logged at ERROR, since no retry will fix it.

Rate limits: every answer's ``x-ratelimit-*`` and ``Retry-After`` headers feed a pacer
shared by the process's calls to this endpoint (core.providers.ratelimit). A call waits for its
slot (at most PROVIDER_RATE_WAIT_S) instead of being sent into an exhausted window; a
longer wait answers "rate limited, retry after" without a call, and the queue holds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any, cast

import openai

from core import classify
from core.config import Settings
from core.errors import TaskFailure
from core.providers import ratelimit
from core.providers.base import GeneratedImage, ImageRequest
from core.providers.image_models import (  # the model list, read from the openai package
    batch_models,
    default_model,
    selectable_models,
    shut_down_models,
)

__all__ = ["OpenAIProvider", "batch_models", "default_model", "selectable_models",
           "shut_down_models"]

log = logging.getLogger(__name__)


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI, *,
                 pacer: ratelimit.ProviderPacer | None = None,
                 max_wait_s: float = 0.0) -> None:
        self.client = client
        self.pacer = pacer  # None: no pacing (every call goes at once)
        self.max_wait_s = max_wait_s

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        key = settings.OPENAI_API_KEY.get_secret_value() if settings.OPENAI_API_KEY else ""
        client = openai.AsyncOpenAI(
            api_key=key or "missing",  # a request then fails as authentication_error
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.OPENAI_TIMEOUT_S,
            max_retries=0,
        )
        wait_s = settings.PROVIDER_RATE_WAIT_S
        pacer = ratelimit.pacer_for(str(client.base_url)) if wait_s > 0 else None
        return cls(client, pacer=pacer, max_wait_s=wait_s)

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        await self._wait_for_slot()
        try:
            # size and quality are validated against the price table when the job is
            # submitted; the SDK's Literal types cannot see that.
            raw = await self.client.images.with_raw_response.generate(
                model=request.model, prompt=request.prompt, size=cast(Any, request.size),
                quality=cast(Any, request.quality), n=1, **request.image_params,
            )
        except openai.APIError as exc:
            if isinstance(exc, openai.APIStatusError) and self.pacer is not None:
                self.pacer.observe(status=exc.status_code, headers=exc.response.headers)
            raise failure_from_sdk_error(exc) from exc
        if self.pacer is not None:
            self.pacer.observe(status=raw.status_code, headers=raw.headers)
        result = raw.parse()
        if not result.data or not result.data[0].b64_json:
            raise TaskFailure(retryable=True, code="empty_response",
                              message="the images API returned no image data")
        try:
            data = base64.b64decode(result.data[0].b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TaskFailure(retryable=True, code="bad_response",
                              message="the images API returned invalid base64") from exc
        usage = result.usage
        return GeneratedImage(
            data=data,
            content_type=_content_type(getattr(result, "output_format", None)),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
        )

    async def _wait_for_slot(self) -> None:
        if self.pacer is None:
            return
        delay = self.pacer.reserve(self.max_wait_s)
        if delay is None:
            # The provider said the window is shut for longer than a delivery should wait:
            # hand the task back to the queue (429 + Retry-After) without a doomed call.
            raise classify.classify_http(
                429, code="rate_limited",
                message="the images API's rate limit is exhausted; waiting for it",
                retry_after_s=max(1.0, self.pacer.blocked_for_s()))
        if delay > 0:
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self.client.close()


def failure_from_sdk_error(exc: openai.APIError) -> TaskFailure:
    """An openai SDK exception as a classified TaskFailure."""
    if isinstance(exc, openai.APITimeoutError):
        return classify.timeout("the images API call timed out")
    if isinstance(exc, openai.APIConnectionError):
        return classify.connection_error(f"could not reach the images API: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        auth = isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError)
        failure = classify.classify_http(
            exc.status_code,
            # One code for every refused credential (OpenAI says invalid_api_key, ...), so
            # the worker logs it at ERROR and the failures table groups it.
            code=None if auth else exc.code,
            message=_message(exc),
            retry_after_s=_retry_after_s(exc.response.headers),
        )
        if auth:
            # Every task would fail the same way: say so loudly, once per failure.
            log.error("the images API refused our credentials (HTTP %s): check OPENAI_API_KEY",
                      exc.status_code, extra={"action": "provider_auth_error",
                                              "error_code": failure.code})
        return failure
    return classify.internal_error(exc)


def _message(exc: openai.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return exc.message


def _retry_after_s(headers: Any) -> float | None:
    """retry-after-ms (OpenAI's precise header) first, then retry-after in seconds."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    return classify.parse_retry_after(headers.get("retry-after"))


def _content_type(output_format: str | None) -> str:
    return {"jpeg": "image/jpeg", "webp": "image/webp"}.get(output_format or "png", "image/png")
