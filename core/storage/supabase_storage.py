"""Supabase Storage: images and thumbnails in the SUPABASE_BUCKET bucket (supabase-py).

Uploads pass ``upsert`` so a redelivered task overwrites its object instead of failing
or duplicating (object keys come from ids only, see core.storage.base.object_keys).
supabase-py sends ``file_options`` as HTTP headers, so every value is a string, and the
content type is given explicitly (without it Storage records text/plain). URLs are
public, or signed for SIGNED_URL_TTL_S when SUPABASE_SIGNED_URLS is set (private bucket).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException
from supabase import create_client
from supabase.lib.client_options import SyncClientOptions

from core.config import Settings
from core.errors import ConfigError, StorageError

CACHE_CONTROL_S = 3600
UPLOAD_TIMEOUT_S = 60.0


class SupabaseStorage:
    name = "supabase"

    def __init__(self, bucket_api: Any, *, signed_urls: bool = False,
                 signed_url_ttl_s: int = 3600, http: httpx.Client | None = None) -> None:
        self.bucket = bucket_api
        self._http = http
        self.signed_urls = signed_urls
        self.signed_url_ttl_s = signed_url_ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SupabaseStorage:
        if not settings.SUPABASE_URL or settings.SUPABASE_KEY is None:
            raise ConfigError("STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_KEY")
        # Our own HTTP client: it carries the timeout (storage3 deprecates its own
        # timeout argument) and is shared by the threads that upload in parallel.
        http = httpx.Client(timeout=UPLOAD_TIMEOUT_S)
        client = create_client(settings.SUPABASE_URL, settings.SUPABASE_KEY.get_secret_value(),
                               options=SyncClientOptions(httpx_client=http))
        return cls(client.storage.from_(settings.SUPABASE_BUCKET),
                   signed_urls=settings.SUPABASE_SIGNED_URLS,
                   signed_url_ttl_s=settings.SIGNED_URL_TTL_S, http=http)

    def save(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.bucket.upload(key, data, {
                "content-type": content_type,
                "cache-control": str(CACHE_CONTROL_S),
                "upsert": "true",
            })
        except (StorageApiError, StorageException, httpx.HTTPError) as exc:
            raise StorageError(f"could not upload {key}: {_describe(exc)}") from exc

    def read(self, key: str) -> bytes:
        try:
            data: bytes = self.bucket.download(key)
        except (StorageApiError, StorageException, httpx.HTTPError) as exc:
            raise StorageError(f"could not read {key}: {_describe(exc)}") from exc
        return data

    def url(self, key: str) -> str:
        if not self.signed_urls:
            return str(self.bucket.get_public_url(key))
        try:
            signed = self.bucket.create_signed_url(key, self.signed_url_ttl_s)
        except (StorageApiError, StorageException, httpx.HTTPError) as exc:
            raise StorageError(f"could not sign a URL for {key}: {_describe(exc)}") from exc
        return str(signed["signedURL"])


    def delete(self, keys: Sequence[str]) -> None:
        # storage3's remove takes up to 1,000 paths per call; missing ones are skipped.
        try:
            for start in range(0, len(keys), 1000):
                self.bucket.remove(list(keys[start:start + 1000]))
        except (StorageApiError, StorageException, httpx.HTTPError) as exc:
            raise StorageError(f"could not delete objects: {_describe(exc)}") from exc

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _describe(exc: Exception) -> str:
    """A short reason without request details (headers carry the key)."""
    if isinstance(exc, StorageApiError):
        return f"{exc.code or 'error'} {exc.status}: {exc.message}"
    return type(exc).__name__
