"""Batch mode: move each OpenAI batch of a job one step further, crash-safely.

A batch row (openai_batches) walks: preparing -> uploading -> uploaded -> creating ->
submitted -> ingesting -> done. Each state is committed BEFORE the call that depends on it:

- uploading: the input file may exist at OpenAI without our knowing its id. On resume we
  look it up by its file name (``aiwi-<row id>.jsonl``) before uploading again.
- creating: the batch may exist without our knowing its id. On resume we look it up by its
  metadata (``aiwi_batch = <row id>``) before creating one: never two batches for the same
  tasks.
- ingesting: the output file is streamed line by line (never whole in memory). A task is
  stored and completed only while it still waits in this batch (complete_batch_task is
  guarded), and lines of already finished tasks are skipped before their image is decoded:
  a poller killed mid-download re-reads the file and stores nothing twice (at most the one
  line in flight when it died is written again, under the same keys).

One poller works on a batch at a time (a PostgreSQL advisory lock per row, freed when a
killed process's connection drops).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import openai
from sqlalchemy import Engine

from core.batch import jsonl, store
from core.config import Settings
from core.dispatch import Dispatcher, TaskRef
from core.errors import StorageError
from core.storage import Storage, make_thumbnail, object_keys
from core.storage.thumbnails import THUMBNAIL_CONTENT_TYPE
from core.styles import apply_style

log = logging.getLogger(__name__)

OPENAI_DONE = frozenset({"completed", "expired", "failed", "cancelled"})
LOOKUP_LIMIT = 1000  # objects scanned when adopting a file or batch after a crash
READ_CHUNK_BYTES = 1 << 20


def _rejects_the_batch(exc: openai.APIStatusError) -> bool:
    return exc.status_code in (400, 404, 413, 422)


# The state recorded before an OpenAI call that creates something (an input file, a
# batch): after a crash there, the next step looks for what the call made before making
# it again, unless this step itself entered the state.
_ANNOUNCED = {"preparing": "uploading", "uploaded": "creating"}

class Halted(Exception):
    """The poller is stopping; the batch row says where the next one resumes."""


@dataclass
class AdvanceReport:
    state: str = ""
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # lines of tasks no longer waiting (already stored, cancelled, ...)
    released: int = 0  # unfinished tasks sent to a new batch or to realtime
    new_batches: list[UUID] = field(default_factory=list)
    # The state this call itself moved the row into: nothing can exist at OpenAI from an
    # earlier process then, so the look-up before an upload or a create is skipped.
    entered: str = ""


def file_name(row_id: UUID) -> str:
    return f"aiwi-{row_id}.jsonl"


def make_client(settings: Settings) -> openai.OpenAI:
    key = settings.OPENAI_API_KEY.get_secret_value() if settings.OPENAI_API_KEY else ""
    # No SDK retries: a retried create could make a second batch; the poller's next round
    # is the retry, and it looks before it creates.
    return openai.OpenAI(api_key=key or "missing", base_url=settings.OPENAI_BASE_URL or None,
                         timeout=settings.OPENAI_TIMEOUT_S, max_retries=0)


def iter_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, one at a time (a line is a few MB; the file is GBs).

    Memory: the pieces of one line, then the line; nothing of a line is kept here while
    the caller works on it (the joined line is yielded, not held in this frame)."""
    pending: list[bytes] = []
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if end > start:
                pending.append(chunk[start:end])
            if pending:
                yield _take(pending)
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield _take(pending)


def _take(pending: list[bytes]) -> bytes:
    line = pending[0] if len(pending) == 1 else b"".join(pending)
    pending.clear()
    return line


class BatchRunner:
    def __init__(self, settings: Settings, engine: Engine, client: openai.OpenAI,
                 storage: Storage, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.storage = storage
        self.dispatcher = dispatcher
        # Set by the poller on shutdown: a long ingest stops between two lines (the batch
        # stays 'ingesting' and the next process reads on from where the rows say).
        self.halt: threading.Event | None = None

    def close(self) -> None:
        self.client.close()

    def _halted(self) -> bool:
        return self.halt is not None and self.halt.is_set()

    # -- one round over everything (the local poller) ----------------------------------
    def cycle(self) -> list[AdvanceReport]:
        for job_id in store.jobs_to_plan(self.engine):
            self.plan(job_id)
        reports = []
        for row_id in store.open_rows(self.engine):
            if self._halted():
                break
            reports.append(self.advance(row_id))
        return reports

    def plan(self, job_id: UUID) -> list[UUID]:
        created, exhausted = store.plan_job(self.engine, job_id, self.settings.BATCH_CHUNK_SIZE,
                                            self.settings.MAX_ATTEMPTS)
        for task_id in exhausted:
            store.finish_task(self.engine, "fail_batch_task", {
                "task_id": task_id, "batch_id": None, "error_code": "batch_attempts_exhausted",
                "error_message": f"not finished after {self.settings.MAX_ATTEMPTS} batches"})
        if created:
            log.info("batches planned", extra={"action": "batch_plan", "job_id": str(job_id),
                                                "batches": len(created)})
        return created

    # -- one batch ---------------------------------------------------------------------
    def advance(self, row_id: UUID) -> AdvanceReport:
        """Take the batch as far as it can go now; returns where it stopped."""
        report = AdvanceReport()
        with store.advisory_lock(self.engine, f"openai_batch:{row_id}") as mine:
            if not mine:
                report.state = "busy"
                return report
            while True:
                row = store.load(self.engine, row_id)
                if row is None:
                    report.state = "gone"
                    return report
                report.state = row.state
                try:
                    if not self._step(row, report):
                        return report
                except openai.APIStatusError as exc:
                    if not _rejects_the_batch(exc) or row.state not in ("uploading",
                                                                        "creating"):
                        raise  # transient (429, 5xx) or credentials: the next round retries
                    self._reject(row, exc, report)

    def _reject(self, row: store.BatchRow, exc: openai.APIStatusError,
                report: AdvanceReport) -> None:
        """OpenAI refused the file or the batch itself (400/404/413/422): retrying the
        same request cannot help, so its tasks fail with OpenAI's code and message."""
        code = str(exc.code or f"http_{exc.status_code}")
        message = str(exc.message)[:2000]
        log.error("batch refused by OpenAI: %s", code, extra={
            "action": "batch_rejected", "batch_row": str(row.id), "job_id": str(row.job_id),
            "error_code": code})
        for task_id in store.waiting_task_ids(self.engine, row.id):
            if store.finish_task(self.engine, "fail_batch_task", {
                    "task_id": task_id, "batch_id": row.id, "error_code": code,
                    "error_message": message}):
                report.failed += 1
        store.execute(self.engine, "batch_record_poll", {
            "id": row.id, "openai_status": row.openai_status, "output_file_id": None,
            "error_file_id": None, "request_total": row.task_count, "request_completed": 0,
            "request_failed": row.task_count, "last_error": f"{code}: {message}"})
        store.execute(self.engine, "batch_finish", {"id": row.id})

    def _step(self, row: store.BatchRow, report: AdvanceReport) -> bool:
        """One transition; False when the batch must wait (or is done)."""
        extra = {"batch_row": str(row.id), "job_id": str(row.job_id)}
        if row.state == "done":
            return False
        unsent = row.state in ("preparing", "uploading", "uploaded")
        if unsent and (row.cancel_requested or row.job_status == "cancelled"):
            store.execute(self.engine, "batch_finish", {"id": row.id})
            return True
        if row.state in _ANNOUNCED:
            entered = _ANNOUNCED[row.state]
            store.execute(self.engine, "batch_set_state", {"id": row.id, "state": entered})
            report.entered = entered
            return True
        if row.state == "uploading":
            found = None if report.entered == "uploading" else self._find_file(row.id)
            file_id = found or self._upload(row)
            store.execute(self.engine, "batch_record_file", {"id": row.id, "file_id": file_id})
            log.info("batch input uploaded", extra={"action": "batch_upload", **extra,
                                                    "file_id": file_id})
            return True
        if row.state == "creating":
            batch = None if report.entered == "creating" else self._find_batch(row.id)
            if batch is None:
                if row.cancel_requested or row.job_status == "cancelled":
                    store.execute(self.engine, "batch_finish", {"id": row.id})
                    return True
                assert row.input_file_id is not None
                batch = self.client.batches.create(
                    completion_window="24h", endpoint=jsonl.ENDPOINT,
                    input_file_id=row.input_file_id,
                    metadata={"aiwi_batch": str(row.id), "aiwi_job": str(row.job_id)})
            store.execute(self.engine, "batch_record_created", {
                "id": row.id, "openai_batch_id": batch.id, "openai_status": batch.status})
            log.info("batch created", extra={"action": "batch_create", **extra,
                                             "openai_batch_id": batch.id})
            return True
        if row.state == "submitted":
            return self._poll(row, extra)
        if row.state == "ingesting":
            self._ingest(row, report, extra)
            store.execute(self.engine, "batch_finish", {"id": row.id})
            return True
        raise RuntimeError(f"unknown batch state {row.state!r}")

    # -- upload and create, each found again after a crash ------------------------------
    def _upload(self, row: store.BatchRow) -> str:
        job = store.job_options(self.engine, row.job_id)
        params = job.image_params()
        size = 0
        with tempfile.TemporaryFile() as spool:
            for task in store.task_requests(self.engine, row.id):
                line = jsonl.request_line(task.id, apply_style(task.style, task.prompt),
                                          job.model, job.size, job.quality, params)
                size += len(line)
                spool.write(line)
            if size > jsonl.MAX_INPUT_BYTES:  # BATCH_CHUNK_SIZE x MAX_PROMPT_CHARS allows it
                raise RuntimeError(f"batch input of {size} bytes is above the Batch API's "
                                   "200 MB: lower BATCH_CHUNK_SIZE")
            spool.seek(0)
            uploaded = self.client.files.create(
                file=(file_name(row.id), spool, "application/jsonl"), purpose="batch")
        return uploaded.id

    def _find_file(self, row_id: UUID) -> str | None:
        wanted = file_name(row_id)
        for seen, item in enumerate(self.client.files.list(purpose="batch")):
            if item.filename == wanted:
                return item.id
            if seen >= LOOKUP_LIMIT:
                break
        return None

    def _find_batch(self, row_id: UUID) -> Any:
        for seen, item in enumerate(self.client.batches.list(limit=100)):
            if (item.metadata or {}).get("aiwi_batch") == str(row_id):
                return item
            if seen >= LOOKUP_LIMIT:
                break
        return None

    # -- poll ---------------------------------------------------------------------------
    def _poll(self, row: store.BatchRow, extra: dict[str, Any]) -> bool:
        assert row.openai_batch_id is not None
        stopping = row.cancel_requested or row.job_status == "cancelled"
        if stopping and row.openai_status not in (*OPENAI_DONE, "cancelling"):
            batch = self.client.batches.cancel(row.openai_batch_id)
            log.info("batch cancel requested", extra={"action": "batch_cancel", **extra})
        else:
            batch = self.client.batches.retrieve(row.openai_batch_id)
        counts = batch.request_counts
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        store.execute(self.engine, "batch_record_poll", {
            "id": row.id, "openai_status": batch.status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "request_total": counts.total if counts else None,
            "request_completed": counts.completed if counts else None,
            "request_failed": counts.failed if counts else None,
            "last_error": "; ".join(f"{e.code}: {e.message}" for e in errors)[:2000] or None,
        })
        if batch.status not in OPENAI_DONE:
            return False
        store.execute(self.engine, "batch_set_state", {"id": row.id, "state": "ingesting"})
        log.info("batch finished at OpenAI: %s", batch.status,
                 extra={"action": "batch_done", **extra, "openai_status": batch.status})
        return True

    # -- ingest -------------------------------------------------------------------------
    def _ingest(self, row: store.BatchRow, report: AdvanceReport, extra: dict[str, Any]) -> None:
        waiting = store.waiting_task_ids(self.engine, row.id)
        retry: dict[UUID, tuple[str, str]] = {}
        for file_id in (row.output_file_id, row.error_file_id):
            if file_id and waiting:
                self._read_file(row, file_id, waiting, retry, report)
        # Not in either file (expired before they ran, or missing) or retryable errors.
        status = row.openai_status or "unknown"
        leftovers = {tid: ("batch_" + status if status != "completed" else
                           "batch_missing_result",
                           f"the batch ended {status} before this request finished")
                     for tid in waiting}
        leftovers.update(retry)
        if leftovers and row.job_status != "cancelled":
            self._release(row, leftovers, report)
        log.info("batch ingested", extra={"action": "batch_ingest", **extra,
                                          "succeeded": report.succeeded,
                                          "failed": report.failed, "skipped": report.skipped,
                                          "released": report.released})

    def _read_file(self, row: store.BatchRow, file_id: str, waiting: set[UUID],
                   retry: dict[UUID, tuple[str, str]], report: AdvanceReport) -> None:
        with self.client.files.with_streaming_response.content(file_id) as response:
            for line in iter_lines(response.iter_bytes(READ_CHUNK_BYTES)):
                if self._halted():
                    raise Halted("stopping: the batch is read on by the next poll")
                task_id = jsonl.peek_custom_id(line)
                if task_id is not None and task_id not in waiting:
                    report.skipped += 1  # finished before (a re-read after a crash)
                    continue
                try:
                    result = jsonl.parse_result(line)
                    del line  # only the decoded image is needed from here on
                except jsonl.BadLine as exc:
                    log.warning("%s", exc, extra={"action": "batch_bad_line",
                                                  "batch_row": str(row.id)})
                    continue
                if result.task_id not in waiting:
                    report.skipped += 1
                    continue
                waiting.discard(result.task_id)
                if isinstance(result, jsonl.Succeeded):
                    self._store_success(row, result, report)
                elif result.retryable:
                    retry[result.task_id] = (result.code, result.message)
                else:
                    if store.finish_task(self.engine, "fail_batch_task", {
                            "task_id": result.task_id, "batch_id": row.id,
                            "error_code": result.code, "error_message": result.message}):
                        report.failed += 1

    def _store_success(self, row: store.BatchRow, result: jsonl.Succeeded,
                       report: AdvanceReport) -> None:
        keys = object_keys(row.job_id, result.task_id)
        try:
            thumbnail = make_thumbnail(result.image)
            self.storage.save(keys.image, result.image, jsonl.content_type(result.output_format))
            self.storage.save(keys.thumbnail, thumbnail, THUMBNAIL_CONTENT_TYPE)
        except (StorageError, OSError, ValueError) as exc:
            # Paid for and in hand: stop here (the batch stays 'ingesting') and read the
            # file again next round rather than lose the image.
            raise RuntimeError(f"storing a batch image failed: {exc}") from exc
        usage = result.usage
        if store.finish_task(self.engine, "complete_batch_task", {
                "task_id": result.task_id, "batch_id": row.id, "image_path": keys.image,
                "thumbnail_path": keys.thumbnail,
                # No per-image model latency in a batch (the batch's own times say how
                # long it took): NULL keeps the realtime latency percentiles honest.
                "latency_ms": None,
                "input_tokens": usage.input_tokens if usage else None,
                "input_image_tokens": usage.input_image_tokens if usage else None,
                "output_tokens": usage.output_tokens if usage else None}):
            report.succeeded += 1
        else:
            report.skipped += 1

    def _release(self, row: store.BatchRow, leftovers: dict[UUID, tuple[str, str]],
                 report: AdvanceReport) -> None:
        attempts = store.task_attempts(self.engine, list(leftovers))
        again: dict[tuple[str, str], list[UUID]] = {}
        for task_id, (code, message) in leftovers.items():
            if attempts.get(task_id, 0) >= self.settings.MAX_ATTEMPTS:
                if store.finish_task(self.engine, "fail_batch_task", {
                        "task_id": task_id, "batch_id": row.id, "error_code": code,
                        "error_message": message}):
                    report.failed += 1
            else:
                again.setdefault((code, message), []).append(task_id)
        realtime = row.batch_fallback == "realtime"
        to = ("pending" if self.settings.USE_CLOUD_TASKS else "queued") if realtime else "batch"
        refs: list[TaskRef] = []
        for (code, message), ids in again.items():
            released = store.release(self.engine, row.id, ids, to=to, code=code,
                                     message=message)
            report.released += len(released)
            refs += [TaskRef(r.id, r.dispatch_generation) for r in released if realtime]
        if refs and to == "pending" and self.dispatcher is not None:
            self.dispatcher.enqueue(refs)  # what stays pending, the sweeper hands over
        if not realtime and report.released:
            report.new_batches = self.plan(row.job_id)
