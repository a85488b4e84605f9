"""Image storage: a local folder or a Supabase Storage bucket, behind one interface."""

from __future__ import annotations

from core.config import Settings, get_settings
from core.storage.base import Storage, object_keys
from core.storage.thumbnails import make_thumbnail

__all__ = ["Storage", "get_storage", "make_thumbnail", "object_keys"]

_stores: dict[tuple[str, int], Storage] = {}


def get_storage(settings: Settings | None = None) -> Storage:
    """The configured store (STORAGE_BACKEND), built once per settings."""
    settings = settings or get_settings()
    key = (settings.storage_name, id(settings))
    if key not in _stores:
        if settings.storage_name == "local":
            from core.storage.local import LocalStorage

            _stores[key] = LocalStorage(settings.LOCAL_STORAGE_DIR)
        else:
            from core.storage.supabase_storage import SupabaseStorage

            _stores[key] = SupabaseStorage.from_settings(settings)
    return _stores[key]
