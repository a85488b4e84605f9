"""OpenAI's Files and Batch APIs for the images stub (testing/openai_stub.py).

Routes, as the real API shapes them (the unmodified ``openai`` client drives them):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files`` (``purpose``
  filter), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content`` (streamed, chunked).
- ``POST /v1/batches``, ``GET /v1/batches`` (newest first, ``after`` / ``limit``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch moves one status per retrieve: validating -> in_progress -> finalizing ->
completed (``steps_per_status`` retrieves each). When it completes, its requests "run":
each becomes an output line (an images response with ``b64_json`` and ``usage``) or an
error line. Scripting, on ``stub.batches``:

- ``on_prompt(fragment, "moderation" | "server_error")``: requests whose prompt contains
  ``fragment`` end as an error (400 moderation_blocked in the output file / 500 in the
  error file).
- ``expire_next(done=k)``: the next batch created expires with only its first k requests
  done; the rest are in the error file with code ``batch_expired``.
- ``reject_creates``: the next N ``POST /v1/batches`` answer 400 ``invalid_request``.
- ``line_delay_s``: a pause after each streamed line of a file (to kill a reader
  mid-download); ``image`` (bytes): the PNG every output line carries, or ``image_for``
  (prompt -> bytes) to draw one per line.
- ``stats``: files uploaded, batches created / cancelled, requests run (model calls).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from testing.png import png_bytes

PROGRESSION = ("validating", "in_progress", "finalizing", "completed")
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):08d}{int(time.time() * 1000) % 100000:05d}"


def usage_for(prompt: str, quality: str | None) -> dict[str, Any]:
    """Deterministic, varied usage per request, so cost checks are exact and non-trivial."""
    text_tokens = 10 + len(prompt.split())
    image_tokens = {"low": 272, "medium": 1056, "high": 4160}.get(quality or "", 1056)
    image_tokens += len(prompt) % 7
    return {"input_tokens": text_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            "output_tokens": image_tokens,
            "output_tokens_details": {"image_tokens": image_tokens, "text_tokens": 0},
            "total_tokens": text_tokens + image_tokens}


@dataclass
class BatchStats:
    files_uploaded: int = 0
    batches_created: int = 0
    batches_cancelled: int = 0
    requests_run: int = 0  # model calls made inside batches
    downloads_started: int = 0


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes | None = None  # an uploaded file
    lines: list[dict[str, Any]] = field(default_factory=list)  # an output / error file

    def body(self) -> dict[str, Any]:
        size = len(self.data) if self.data is not None else 0
        return {"id": self.id, "object": "file", "bytes": size, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: int
    requests: list[dict[str, Any]]
    status: str = "validating"
    retrieves: int = 0
    expire_after: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None

    def body(self) -> dict[str, Any]:
        done = self.status in ("completed", "expired", "cancelled", "failed")
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "input_file_id": self.input_file_id, "completion_window": "24h",
            "status": self.status, "created_at": self.created_at,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "metadata": self.metadata,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "request_counts": {"total": len(self.requests),
                               "completed": self.completed if done else 0,
                               "failed": self.failed if done else 0},
        }


class BatchAPI:
    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        self.steps_per_status = 1
        self.line_delay_s = 0.0
        self.image: bytes | None = None
        self.image_for: Any = None  # optional: prompt -> PNG bytes, per line
        self.reject_creates = 0  # the next N batch creates answer 400 invalid_request
        self.stats = BatchStats()
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self._by_prompt: dict[str, str] = {}
        self._expire_next: list[int] = []
        self._lock = threading.Lock()
        self._png: bytes | None = None

    # -- scripting ------------------------------------------------------------------
    def on_prompt(self, fragment: str, kind: str) -> None:
        with self._lock:
            self._by_prompt[fragment] = kind

    def expire_next(self, done: int) -> None:
        with self._lock:
            self._expire_next.append(done)

    def snapshot(self) -> BatchStats:
        with self._lock:
            return BatchStats(**vars(self.stats))

    # -- routing ----------------------------------------------------------------------
    @staticmethod
    def handles(path: str) -> bool:
        p = urlsplit(path).path
        return p.startswith("/v1/files") or p.startswith("/v1/batches")

    def serve(self, handler: BaseHTTPRequestHandler, method: str, raw: bytes,
              send: Any) -> None:
        url = urlsplit(handler.path)
        parts = [p for p in url.path.split("/") if p][1:]  # drop "v1"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if parts[0] == "files":
                if method == "POST" and len(parts) == 1:
                    return send(200, {}, self._upload(handler.headers.get("content-type", ""),
                                                      raw))
                if method == "GET" and len(parts) == 1:
                    return send(200, {}, self._list_files(query))
                if method == "GET" and len(parts) == 3 and parts[2] == "content":
                    return self._stream(handler, parts[1])
                if method == "GET" and len(parts) == 2:
                    return send(200, {}, self._file(parts[1]).body())
            if parts[0] == "batches":
                if method == "POST" and len(parts) == 1:
                    return send(200, {}, self._create(json.loads(raw or b"{}")))
                if method == "GET" and len(parts) == 1:
                    return send(200, {}, self._list_batches(query))
                if method == "GET" and len(parts) == 2:
                    return send(200, {}, self._retrieve(parts[1]))
                if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
                    return send(200, {}, self._cancel(parts[1]))
        except KeyError as exc:
            return send(404, {}, _err(f"No such object: {exc.args[0]}", "not_found"))
        except ValueError as exc:
            return send(400, {}, _err(str(exc), "invalid_request"))
        return send(404, {}, _err("not found", None))

    # -- files ------------------------------------------------------------------------
    def _upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        message = BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        parts = cast("list[Message]", message.get_payload() if message.is_multipart() else [])
        for part in parts:
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(),
                                 payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or "purpose" not in fields:
            raise ValueError("file and purpose are required")
        filename, data = fields["file"]
        purpose = fields["purpose"][1].decode()
        if purpose == "batch" and len(data) > 200 * 1024 * 1024:
            raise ValueError("batch input files are limited to 200 MB")
        with self._lock:
            item = _File(_new_id("file"), filename or "upload", purpose, int(time.time()),
                         data=data)
            self.files[item.id] = item
            self.stats.files_uploaded += 1
        return item.body()

    def _file(self, file_id: str) -> _File:
        with self._lock:
            return self.files[file_id]

    def _list_files(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            items = [f.body() for f in reversed(self.files.values())
                     if not query.get("purpose") or f.purpose == query["purpose"]]
        return {"object": "list", "data": items, "has_more": False}

    def _stream(self, handler: BaseHTTPRequestHandler, file_id: str) -> None:
        item = self._file(file_id)
        with self._lock:
            self.stats.downloads_started += 1
        handler.send_response(200)
        handler.send_header("content-type", "application/octet-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        try:
            for line in self._render(item):
                handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                if self.line_delay_s and self.stopping.wait(self.line_delay_s):
                    break
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the reader died or gave up
            handler.close_connection = True

    def _render(self, item: _File) -> Iterator[bytes]:
        if item.data is not None:
            yield item.data
            return
        for spec in item.lines:  # built on the fly: a 500-image file is GBs
            yield json.dumps(self._line(spec)).encode() + b"\n"

    def _line(self, spec: dict[str, Any]) -> dict[str, Any]:
        request_id = f"req_{spec['custom_id'][:8]}"
        base = {"id": f"batch_req_{spec['custom_id'][:12]}", "custom_id": spec["custom_id"]}
        if spec["kind"] == "ok":
            body = spec["body"]
            png = (self.image_for(str(body.get("prompt", ""))) if self.image_for
                   else self.image or self._default_png())
            return {**base, "error": None, "response": {
                "status_code": 200, "request_id": request_id, "body": {
                    "created": int(time.time()),
                    "data": [{"b64_json": base64.b64encode(png).decode()}],
                    "background": "opaque", "output_format": body.get("output_format", "png"),
                    "quality": body.get("quality"), "size": body.get("size"),
                    "usage": usage_for(str(body.get("prompt", "")), body.get("quality"))}}}
        if spec["kind"] == "moderation":
            return {**base, "error": None, "response": {
                "status_code": 400, "request_id": request_id, "body": {"error": {
                    "message": "Your request was rejected by the safety system.",
                    "type": "image_generation_user_error", "param": None,
                    "code": "moderation_blocked"}}}}
        if spec["kind"] == "server_error":
            return {**base, "error": None, "response": {
                "status_code": 500, "request_id": request_id, "body": {"error": {
                    "message": "The server had an error.", "type": "server_error",
                    "param": None, "code": "server_error"}}}}
        return {**base, "response": None, "error": {
            "code": spec["kind"], "message": "This request could not be executed before the "
                                             "completion window expired."}}

    def _default_png(self) -> bytes:
        if self._png is None:
            self._png = png_bytes(8, 3)
        return self._png

    # -- batches ----------------------------------------------------------------------
    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        file_id = str(body.get("input_file_id"))
        source = self._file(file_id)
        if source.purpose != "batch" or source.data is None:
            raise ValueError("input_file_id must be a file uploaded with purpose batch")
        if body.get("completion_window") != "24h":
            raise ValueError("completion_window must be 24h")
        with self._lock:
            if self.reject_creates > 0:
                self.reject_creates -= 1
                raise ValueError("Model 'gpt-image-x' is not supported by the Batch API.")
        requests = [json.loads(line) for line in source.data.splitlines() if line.strip()]
        if len(requests) > 50_000:
            raise ValueError("a batch holds at most 50,000 requests")
        with self._lock:
            batch = _Batch(_new_id("batch"), file_id, str(body.get("endpoint")),
                           body.get("metadata"), int(time.time()), requests)
            if self._expire_next:
                batch.expire_after = self._expire_next.pop(0)
            self.batches[batch.id] = batch
            self.stats.batches_created += 1
            bad = [r for r in requests if r.get("url") != batch.endpoint
                   or "custom_id" not in r]
            if bad:
                batch.status = "failed"
                batch.errors = [{"code": "invalid_request", "line": 1,
                                 "message": "url must match the batch endpoint",
                                 "param": None}]
            return batch.body()

    def _retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self.batches[batch_id]
            batch.retrieves += 1
            if batch.status == "cancelling":
                self._finish(batch, "cancelled", done=0)
            elif batch.status in PROGRESSION[:-1] and batch.retrieves % self.steps_per_status == 0:
                nxt = PROGRESSION[PROGRESSION.index(batch.status) + 1]
                if nxt == "finalizing" and batch.expire_after is not None:
                    self._finish(batch, "expired", done=batch.expire_after)
                elif nxt == "completed":
                    self._finish(batch, "completed", done=len(batch.requests))
                else:
                    batch.status = nxt
            return batch.body()

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self.batches[batch_id]
            if batch.status in ("validating", "in_progress", "finalizing"):
                batch.status = "cancelling"
                self.stats.batches_cancelled += 1
            return batch.body()

    def _list_batches(self, query: dict[str, str]) -> dict[str, Any]:
        limit = int(query.get("limit") or 20)
        with self._lock:
            items = list(reversed(self.batches.values()))
        if query.get("after"):
            ids = [b.id for b in items]
            items = items[ids.index(query["after"]) + 1:] if query["after"] in ids else []
        page = items[:limit]
        return {"object": "list", "data": [b.body() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None, "has_more": len(items) > limit}

    def _finish(self, batch: _Batch, status: str, *, done: int) -> None:
        """(Under the lock.) Run the first ``done`` requests; the rest did not run."""
        out: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, request in enumerate(batch.requests):
            custom_id = str(request["custom_id"])
            if i >= done:
                if status == "expired":
                    errors.append({"custom_id": custom_id, "kind": "batch_expired"})
                continue
            self.stats.requests_run += 1
            prompt = str(request.get("body", {}).get("prompt", ""))
            kind = next((k for f, k in self._by_prompt.items() if f in prompt), "ok")
            spec = {"custom_id": custom_id, "kind": kind, "body": request.get("body", {})}
            (errors if kind == "server_error" else out).append(spec)
            if kind == "ok":
                batch.completed += 1
            else:
                batch.failed += 1
        batch.failed += sum(1 for e in errors if e["kind"] == "batch_expired")
        if out:
            batch.output_file_id = self._output_file(batch, "output", out)
        if errors:
            batch.error_file_id = self._output_file(batch, "error", errors)
        batch.status = status

    def _output_file(self, batch: _Batch, kind: str, lines: list[dict[str, Any]]) -> str:
        item = _File(_new_id("file"), f"{batch.id}_{kind}.jsonl", "batch_output",
                     int(time.time()), lines=lines)
        self.files[item.id] = item
        return item.id


def _err(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
