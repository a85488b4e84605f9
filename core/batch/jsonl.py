"""The Batch API's file formats, pure: one input line per task, one result per output or
error line. No I/O here, so every shape is tested without a server.

Input line: ``{"custom_id": <task id>, "method": "POST", "url": "/v1/images/generations",
"body": {...images.generate parameters...}}``. Output and error lines:
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``: a
200 body is an images response (``data[0].b64_json``, ``usage``); otherwise the body's
``error`` (or the line's ``error``) says why.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from core.billing.prices import Usage

ENDPOINT: Final = "/v1/images/generations"
# The Batch API's limits per input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
# Error codes that mean "not attempted / not finished", not "this request is bad": those
# tasks go into the next batch (or realtime) instead of failing.
UNFINISHED_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})
# custom_id sits near the start of a line: read it without parsing a multi-MB line.
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([0-9a-fA-F-]{36})"')
_HEAD_BYTES = 512


def request_line(task_id: UUID, prompt: str, model: str, size: str, quality: str,
                 image_params: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1, "size": size,
                            "quality": quality, **image_params}
    line = {"custom_id": str(task_id), "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def peek_custom_id(line: bytes) -> UUID | None:
    """The task id of a result line, from its first bytes (None if not found there)."""
    match = _CUSTOM_ID.search(line[:_HEAD_BYTES])
    if match is None:
        return None
    try:
        return UUID(match.group(1).decode())
    except ValueError:
        return None


@dataclass(frozen=True)
class Succeeded:
    task_id: UUID
    image: bytes
    output_format: str | None
    usage: Usage | None


@dataclass(frozen=True)
class Failed:
    task_id: UUID
    code: str
    message: str
    # True: the request was not (fully) tried, or failed in a way a retry may fix
    # (429 / 5xx / expiry): the task goes to the next batch while attempts remain.
    retryable: bool


Result = Succeeded | Failed


class BadLine(ValueError):
    """A result line that is not what the Batch API writes."""


_B64_KEY = re.compile(rb'"b64_json"\s*:\s*"')


def _split_image(line: bytes) -> tuple[bytes, memoryview | None]:
    """(the line with its base64 image replaced by "", a view of the base64 text).

    A line is a few MB of base64: parsed as JSON it would become a str of that size and
    then an ASCII copy for the decoder. Base64 holds no quote or backslash, so its end is
    the next quote, and the decoder reads it straight from the line's bytes."""
    match = _B64_KEY.search(line)
    if match is None:
        return line, None
    start = match.end()
    end = line.find(b'"', start)
    if end < 0:
        return line, None
    return line[:start] + line[end:], memoryview(line)[start:end]


def parse_result(line: bytes) -> Result:
    """One output or error file line as a result."""
    rest, b64 = _split_image(line)
    try:
        record = json.loads(rest)
        task_id = UUID(str(record["custom_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadLine(f"unreadable batch result line: {type(exc).__name__}") from None
    response = record.get("response") or {}
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    if status == 200 and isinstance(body, dict):
        return _succeeded(task_id, body, b64)
    error = (body.get("error") if isinstance(body, dict) else None) or record.get("error") or {}
    code = str(error.get("code") or (f"http_{status}" if status else "batch_error"))
    message = str(error.get("message") or "the Batch API returned no message")
    retryable = code in UNFINISHED_CODES or status == 429 or status >= 500
    return Failed(task_id, code, message[:2000], retryable)


def _succeeded(task_id: UUID, body: dict[str, Any], b64: memoryview | None) -> Result:
    if b64 is None:  # not where _split_image looks: the parsed body has it, if anywhere
        data = body.get("data") or []
        found = data[0].get("b64_json") if data and isinstance(data[0], dict) else None
        b64 = memoryview(found.encode()) if found else None
    if b64 is None or not len(b64):
        return Failed(task_id, "empty_response", "the batch result holds no image data", True)
    try:
        image = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return Failed(task_id, "bad_response", "the batch result holds invalid base64", True)
    return Succeeded(task_id, image, body.get("output_format"), _usage(body.get("usage")))


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details") or {}
    try:
        return Usage(input_tokens=int(raw.get("input_tokens") or 0),
                     output_tokens=int(raw.get("output_tokens") or 0),
                     input_image_tokens=int(details.get("image_tokens") or 0))
    except (TypeError, ValueError):
        return None


def content_type(output_format: str | None) -> str:
    return {"jpeg": "image/jpeg", "webp": "image/webp"}.get(output_format or "png", "image/png")
