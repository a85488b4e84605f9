"""Text chunks in stored PNGs: the prompt, model and job id travel with the image.

Written as PNG iTXt chunks (UTF-8, any prompt) spliced in right after the IHDR header
chunk: no decode and re-encode of the picture (which Pillow's PngInfo would need, at
~100 ms of CPU per 1024 px image on the delivery path), and readers such as Pillow
(``Image.open(...).text``), exiftool and browsers' metadata panels see them as usual.
Anything that is not a PNG is returned unchanged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = len(PNG_SIGNATURE) + 4 + 4 + 13 + 4  # length, type, 13 bytes of data, CRC
MAX_TEXT_CHARS = 8000  # a prompt is at most MAX_PROMPT_CHARS; keep chunks bounded anyway


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def itxt_chunk(keyword: str, text: str) -> bytes:
    """One uncompressed iTXt chunk. Keywords are 1-79 Latin-1 characters."""
    key = keyword.encode("latin-1")[:79]
    body = key + b"\x00" + b"\x00\x00" + b"\x00" + b"\x00" + text[:MAX_TEXT_CHARS].encode()
    return _chunk(b"iTXt", body)


def with_text(data: bytes, fields: Mapping[str, str]) -> bytes:
    """``data`` with ``fields`` as iTXt chunks, if it is a PNG (else unchanged)."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < _IHDR_END:
        return data
    chunks = b"".join(itxt_chunk(k, v) for k, v in fields.items() if v)
    return data[:_IHDR_END] + chunks + data[_IHDR_END:]


def image_fields(*, prompt: str, model: str, job_id: object, task_id: object,
                 provider: str = "") -> dict[str, str]:
    """What every stored image carries: the prompt the model received, the model, the
    job (and task) it belongs to."""
    return {"prompt": prompt, "model": f"{provider}/{model}" if provider else model,
            "job_id": str(job_id), "task_id": str(task_id), "Software": "AIWebImageService"}


def tag(data: bytes, claimed: object) -> bytes:
    """The image of a claimed delivery (core.delivery.statements.ClaimedTask) with its text chunks:
    the one call core.delivery.processing makes before storing."""
    from core.styles import apply_style

    c: Any = claimed
    return with_text(data, image_fields(prompt=apply_style(c.style, c.prompt), model=c.model,
                                        provider=c.provider, job_id=c.job_id, task_id=c.id))


def tagged(image: Any, claimed: object) -> Any:
    """A provider's GeneratedImage with the text chunks added (see ``tag``)."""
    import dataclasses

    return dataclasses.replace(image, data=tag(image.data, claimed))
