"""Thumbnails for galleries: WebP, longest side THUMBNAIL_PX."""

from __future__ import annotations

import io

from PIL import Image

THUMBNAIL_PX = 256
THUMBNAIL_CONTENT_TYPE = "image/webp"


def make_thumbnail(image_bytes: bytes, px: int = THUMBNAIL_PX) -> bytes:
    with Image.open(io.BytesIO(image_bytes)) as source:
        image = source.convert("RGB")
    image.thumbnail((px, px))
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=80, method=2)
    return out.getvalue()
