"""A small valid PNG without Pillow, for the model stubs' answers."""

from __future__ import annotations

import struct
import zlib


def png_bytes(px: int = 8, seed: int = 0) -> bytes:
    """A valid RGB PNG of px x px, coloured from ``seed`` (no Pillow needed)."""
    r, g, b = (seed * 67) % 256, (seed * 131 + 64) % 256, (seed * 29 + 128) % 256
    raw = b"".join(b"\x00" + bytes((r, g, b)) * px for _ in range(px))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", px, px, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
