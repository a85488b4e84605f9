"""Exports of one job: its task table as CSV, its images as a ZIP.

Both walk the job in keyset pages (never the whole job in memory, never one long
transaction). The ZIP is produced as a stream of pieces (iter_images_zip: the worker's
export route sends them as they come, the CLI writes them to a file), holding one image
at a time whatever the job's size. Images come through the Storage interface, so the
same code exports from a local folder or a Supabase bucket.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from uuid import UUID

from sqlalchemy import Engine

from core.billing import charges
from core.db import transaction
from core.db.queries import q
from core.errors import StorageError
from core.storage import Storage

EXPORT_PAGE = 1000
TASK_CSV_COLUMNS = (
    "task_id", "prompt_index", "image_index", "prompt", "style", "status", "attempts",
    "last_error_code", "last_error", "image_path", "thumbnail_path", "latency_ms",
    "created_at", "started_at", "finished_at",
    # Billed usage and its cost (core.billing.charges): tokens x rates, batch at half price.
    "input_tokens", "output_tokens", "billed_mode", "cost_usd",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection);
# prompts and error messages are outside text, so such cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _pages(engine: Engine | None, name: str, job_id: UUID) -> Iterator[Any]:
    after = (-1, -1)
    while True:
        with transaction(engine) as conn:
            rows = conn.execute(q(name), {
                "job_id": job_id, "after_prompt": after[0], "after_image": after[1],
                "limit": EXPORT_PAGE}).all()
        yield from rows
        if len(rows) < EXPORT_PAGE:
            return
        after = (rows[-1].prompt_index, rows[-1].image_index)


def safe_cell(value: object) -> object:
    """A value as a CSV cell that a spreadsheet will not evaluate."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_tasks_csv(job_id: UUID, out: IO[str], *, engine: Engine | None = None) -> int:
    """Write the job's task table to ``out`` as CSV; returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(TASK_CSV_COLUMNS)
    n = 0
    with transaction(engine) as conn:
        job = conn.execute(q("job_by_id"), {"job_id": job_id}).first()
    for r in _pages(engine, "export_tasks_after", job_id):
        usd = None if job is None or r.status != "succeeded" else charges.task_cost_usd(
            job.model, job.provider, input_tokens=r.input_tokens,
            output_tokens=r.output_tokens, input_image_tokens=r.input_image_tokens,
            billed_mode=r.billed_mode)
        writer.writerow([
            r.id, r.prompt_index, r.image_index, safe_cell(r.prompt), r.style, r.status,
            r.attempts, r.last_error_code, safe_cell(r.last_error), r.image_path,
            r.thumbnail_path, r.latency_ms,
            *(t.isoformat() if t else "" for t in (r.created_at, r.started_at, r.finished_at)),
            r.input_tokens, r.output_tokens, r.billed_mode or "",
            "" if usd is None else f"{usd:f}",
        ])
        n += 1
    return n


def tasks_csv_bytes(job_id: UUID, *, engine: Engine | None = None) -> bytes:
    buffer = io.StringIO()
    write_tasks_csv(job_id, buffer, engine=engine)
    return buffer.getvalue().encode("utf-8")


@dataclass
class ZipResult:
    images: int = 0
    missing: int = 0


def image_file_name(prompt_index: int, image_index: int, task_id: UUID, key: str) -> str:
    """Name inside the ZIP: sorts in prompt order, unique by task id, never prompt text
    (a prompt may hold slashes or '..')."""
    suffix = key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else "png"
    return f"{prompt_index + 1:05d}-{image_index + 1:02d}-{task_id}.{suffix}"


MANIFEST_COLUMNS = ("file", "task_id", "prompt_index", "image_index", "prompt",
                    "styled_prompt", "style", "provider", "model", "size", "quality",
                    "cost_usd", "note")


class _Chunks:
    """A write-only, non-seekable file that hands out what was written so far: zipfile
    writes into it and the caller streams the bytes on (ZIP data descriptors make a
    seek-free ZIP that every unzip tool reads)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def iter_images_zip(job_id: UUID, storage: Storage, *, engine: Engine | None = None,
                    result: ZipResult | None = None) -> Iterator[bytes]:
    """The job's images as a ZIP, yielded in pieces as it is written: one image in
    memory at a time, whatever the job's size. manifest.csv at the end lists each file
    with its prompt, the styled prompt the model received, model, size, quality and cost
    per image; an image the store cannot give is listed as missing, not fatal."""
    from core.billing.prices import price_per_image
    from core.styles import apply_style

    result = result if result is not None else ZipResult()
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(MANIFEST_COLUMNS)
    sink = _Chunks()
    # PNGs are already compressed: storing them is as small and much faster.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED,  # type: ignore[call-overload]
                         allowZip64=True) as zf:
        for r in _pages(engine, "export_images_after", job_id):
            price = price_per_image(r.provider, r.model, r.size, r.quality)
            about = (safe_cell(r.prompt), safe_cell(apply_style(r.style, r.prompt)), r.style,
                     r.provider, r.model, r.size, r.quality,
                     "" if price is None else f"{price}")
            try:
                data = storage.read(r.image_path)
            except StorageError as exc:
                result.missing += 1
                writer.writerow(("", r.id, r.prompt_index, r.image_index, *about,
                                 f"missing: {exc.message}"))
                continue
            name = image_file_name(r.prompt_index, r.image_index, r.id, r.image_path)
            with zf.open(zipfile.ZipInfo(name, date_time=time.localtime()[:6]), "w",
                         force_zip64=len(data) > 2**31) as member:
                member.write(data)
            del data
            result.images += 1
            writer.writerow((name, r.id, r.prompt_index, r.image_index, *about, ""))
            yield sink.take()
        zf.writestr("manifest.csv", manifest.getvalue().encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED)
    yield sink.take()


def write_images_zip(job_id: UUID, storage: Storage, out: IO[bytes], *,
                     engine: Engine | None = None) -> ZipResult:
    """Write the job's images ZIP (iter_images_zip) to ``out``."""
    result = ZipResult()
    for chunk in iter_images_zip(job_id, storage, engine=engine, result=result):
        out.write(chunk)
    return result
