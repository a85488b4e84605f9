"""Answers as the OpenAPI document declares them, so clients (and the schema fuzz in
tests/security) know every status an endpoint may give and the body that comes with it:
the error bodies, and a task delivery's answer (DeliveryAnswer)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.responses import Response

if TYPE_CHECKING:
    from core.delivery.processing import DeliveryOutcome


class ErrorBody(BaseModel):
    detail: str
    field: str | None = None


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """422: ``field`` names the first bad field, ``message`` says what is wrong with it."""

    detail: list[FieldError]
    field: str
    message: str


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "string"}}}
_ERRORS: dict[int, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid credentials."},
    403: {"model": ErrorBody, "description": "Not accepted from this client."},
    404: {"model": ErrorBody, "description": "No such job."},
    409: {"model": ErrorBody, "description": "The job's state does not allow this."},
    413: {"model": ErrorBody, "description": "Request body over MAX_BODY_BYTES."},
    422: {"model": ValidationErrorBody, "description": "Invalid input; names the field."},
    503: {"model": ErrorBody, "description": "Database unavailable; retry later.",
          "headers": _RETRY_AFTER},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry for a route or router that may answer ``codes``."""
    return {code: _ERRORS[code] for code in codes}


class DeliveryAnswer(Response):
    """A delivery's outcome as HTTP: its status, its body as JSON, and Retry-After when it
    says when to come back. The one encoding behind both the route (worker/routes/tasks.py)
    and the fast path (worker/fast_task.py), which sends it without FastAPI.

    Built directly rather than through ``Response.__init__``, which would rebuild the
    header list from a mapping: the fast path answers every local delivery with this."""

    media_type = "application/json"

    def __init__(self, outcome: DeliveryOutcome) -> None:
        body = json.dumps(outcome.body(), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")
        headers = [(b"content-length", str(len(body)).encode("latin-1")),
                   (b"content-type", b"application/json")]
        retry_after = outcome.retry_after_header()
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode("latin-1")))
        self.status_code = outcome.http_status
        self.body = body
        self.raw_headers = headers
        self.background = None
