"""A Supabase Storage REST server for tests: the endpoints supabase-py (storage3) calls.

No Supabase Storage server runs here without Docker, so this is the peer: a real HTTP
server on 127.0.0.1 that keeps objects in memory and answers like Storage does.

    with StorageStub(bucket="generated-images", key="service-key") as stub:
        SUPABASE_URL = stub.url; SUPABASE_KEY = stub.key
        stub.objects["generated-images/<path>"]  # StoredObject(data, content_type, ...)
        stub.requests                            # (method, path, headers) of every call

Endpoints (under /storage/v1):
- ``POST /object/{bucket}/{path}``: multipart upload; an existing object is refused
  (400, statusCode "409" Duplicate) unless ``x-upsert: true``.
- ``GET /object/{bucket}/{path}``: authenticated download.
- ``GET /object/public/{bucket}/{path}``: public download (``public_bucket=True``).
- ``POST /object/sign/{bucket}/{path}`` ``{"expiresIn": n}``: ``{"signedURL": ...}``;
  ``GET /object/sign/{bucket}/{path}?token=...``: download with that token until expiry.
Every authenticated call needs ``apikey`` and ``Authorization: Bearer`` equal to ``key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = "/storage/v1"


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str | None
    version: int  # 1 on create, +1 per upsert


class StorageStub:
    def __init__(self, *, bucket: str = "generated-images", key: str = "test-service-key",
                 public_bucket: bool = True) -> None:
        self.bucket = bucket
        self.key = key
        self.public_bucket = public_bucket
        self.objects: dict[str, StoredObject] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._secret = uuid.uuid4().bytes
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """What SUPABASE_URL should be."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StorageStub:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StorageStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token_for(self, object_id: str, expires_at: int) -> str:
        mac = hmac.new(self._secret, f"{object_id}:{expires_at}".encode(), hashlib.sha256)
        return f"{expires_at}.{mac.hexdigest()}"

    def token_valid(self, object_id: str, token: str) -> bool:
        head, _, _ = token.partition(".")
        if not head.isdigit() or int(head) < time.time():
            return False
        return hmac.compare_digest(token, self.token_for(object_id, int(head)))


def _error(status_code: str, error: str, message: str) -> dict[str, str]:
    return {"statusCode": status_code, "error": error, "message": message}


def _handler_for(stub: StorageStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, body: bytes | dict[str, Any],
                   content_type: str = "application/json") -> None:
            payload = json.dumps(body).encode() if isinstance(body, dict) else body
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _authorized(self) -> bool:
            return (self.headers.get("apikey") == stub.key
                    and self.headers.get("authorization") == f"Bearer {stub.key}")

        def _route(self) -> tuple[str, str, dict[str, list[str]]]:
            """(kind, object id 'bucket/path', query) from the request path."""
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            if not path.startswith(PREFIX + "/object/"):
                return "unknown", "", {}
            rest = path[len(PREFIX + "/object/"):]
            for kind in ("public", "sign"):
                if rest.startswith(kind + "/"):
                    return kind, rest[len(kind) + 1:], parse_qs(parts.query)
            return "object", rest, parse_qs(parts.query)

        def _record(self) -> None:
            with stub._lock:
                stub.requests.append((self.command, self.path, dict(self.headers.items())))

        def do_POST(self) -> None:
            self._record()
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            kind, object_id, _ = self._route()
            if not self._authorized():
                self._reply(400, _error("403", "Unauthorized", "invalid signature"))
                return
            if kind == "sign":
                if object_id not in stub.objects:
                    self._reply(400, _error("404", "not_found", "Object not found"))
                    return
                expires_in = int(json.loads(raw or b"{}").get("expiresIn", 60))
                token = stub.token_for(object_id, int(time.time()) + expires_in)
                self._reply(200, {"signedURL": f"/object/sign/{object_id}?token={token}"})
                return
            if kind != "object" or not object_id.startswith(stub.bucket + "/"):
                self._reply(400, _error("404", "Bucket not found", "Bucket not found"))
                return
            message = BytesParser(policy=HTTP).parsebytes(
                b"content-type: " + self.headers.get("content-type", "").encode() + b"\r\n\r\n"
                + raw)
            file_part = next((p for p in message.iter_parts()
                              if p.get_param("name", header="content-disposition") == "file"),
                             None)
            fields = {p.get_param("name", header="content-disposition"): p.get_content()
                      for p in message.iter_parts()}
            if file_part is None:
                self._reply(400, _error("400", "InvalidRequest", "no file part"))
                return
            upsert = self.headers.get("x-upsert") == "true"
            with stub._lock:
                existing = stub.objects.get(object_id)
                if existing is not None and not upsert:
                    self._reply(400, _error("409", "Duplicate", "The resource already exists"))
                    return
                cache = fields.get("cacheControl")
                payload = file_part.get_payload(decode=True)
                stub.objects[object_id] = StoredObject(
                    data=payload if isinstance(payload, bytes) else b"",
                    content_type=file_part.get_content_type(),
                    cache_control=cache if isinstance(cache, str) else None,
                    version=(existing.version + 1) if existing else 1)
            self._reply(200, {"Key": object_id, "Id": str(uuid.uuid4())})

        def do_DELETE(self) -> None:
            # Storage's bulk remove: DELETE /object/{bucket} with {"prefixes": [paths]};
            # answers the removed objects, skipping paths that were not there.
            self._record()
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            kind, bucket, _ = self._route()
            if not self._authorized():
                self._reply(400, _error("403", "Unauthorized", "invalid signature"))
                return
            if kind != "object" or bucket != stub.bucket:
                self._reply(400, _error("404", "Bucket not found", "Bucket not found"))
                return
            removed = []
            with stub._lock:
                for path in json.loads(raw or b"{}").get("prefixes", []):
                    if stub.objects.pop(f"{bucket}/{path}", None) is not None:
                        removed.append({"name": path, "bucket_id": bucket})
            self._reply(200, json.dumps(removed).encode())

        def do_GET(self) -> None:
            self._record()
            kind, object_id, query = self._route()
            if kind == "object" and not self._authorized():
                self._reply(400, _error("403", "Unauthorized", "invalid signature"))
                return
            if kind == "public" and not stub.public_bucket:
                self._reply(400, _error("404", "not_found", "Bucket is not public"))
                return
            if kind == "sign" and not stub.token_valid(object_id,
                                                      (query.get("token") or [""])[0]):
                self._reply(400, _error("400", "InvalidJWT", "invalid or expired token"))
                return
            stored = stub.objects.get(object_id)
            if stored is None:
                self._reply(400, _error("404", "not_found", "Object not found"))
                return
            self._reply(200, stored.data, stored.content_type)

    return Handler
