"""Error answers as the OpenAPI document declares them, so clients (and the schema fuzz in
tests/security) know every status an endpoint may give and the body that comes with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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
