"""Thumbnails for galleries: WebP, longest side THUMBNAIL_PX."""

from __future__ import annotations

import io

from PIL import Image

THUMBNAIL_PX = 256
THUMBNAIL_CONTENT_TYPE = "image/webp"


def make_thumbnail(image_bytes: bytes, px: int = THUMBNAIL_PX) -> bytes:
    with Image.open(io.BytesIO(image_bytes)) as source:
        source.draft("RGB", (px, px))  # JPEG: decode at a reduced scale
        # An RGB source is shrunk in place: no second full-size copy (a 1024x1024 picture
        # is 3 MB decoded; batch ingest decodes hundreds in a row).
        image = source if source.mode == "RGB" else source.convert("RGB")
        image.thumbnail((px, px))
        out = io.BytesIO()
        # Inside the block: a source already smaller than px is only decoded here.
        image.save(out, format="WEBP", quality=80, method=2)
    return out.getvalue()


def warm() -> None:
    """Load what the first thumbnail would load on its way: Pillow's format plugins and the
    WebP encoder (about 100 ms on a cold start, then ~1 ms a thumbnail). Called once at
    start-up, so the first wave of deliveries does not wait behind it on the event loop
    (small images are stored there, core.delivery.processing)."""
    Image.init()
    sample = io.BytesIO()
    Image.new("RGB", (2, 2)).save(sample, format="PNG")
    make_thumbnail(sample.getvalue())
