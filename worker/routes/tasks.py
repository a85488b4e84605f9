"""The task endpoint: the one URL Cloud Tasks and the local dispatcher deliver to."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from core.processing import TaskProcessor
from worker.deps import TaskAuthDep
from worker.responses import ErrorBody, error_responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["worker"])


class TaskDelivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: UUID


class TaskAnswer(BaseModel):
    """What the delivery came to; the status code tells the queue whether to retry."""

    task_id: str
    # succeeded | failed | retry | duplicate | busy | not_due | stopping | unknown_task |
    # lost_lease
    outcome: str
    attempt: int | None = None
    error_code: str | None = None


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before the next try.",
                                "schema": {"type": "string"}}}
# 2xx: done, do not retry. 429/503: retry later (rate limited, busy, upstream or database
# down). 500: retry with backoff. See the delivery contract in DESIGN.md.
_ANSWERS: dict[int | str, dict[str, Any]] = {
    **error_responses(401, 403, 413, 422),
    429: {"model": TaskAnswer, "description": "Rate limited: retry later.",
          "headers": _RETRY_AFTER},
    500: {"model": TaskAnswer, "description": "Failed this time: retry with backoff."},
    503: {"model": TaskAnswer | ErrorBody,
          "description": "Busy (a live lease) or upstream/database down: retry later.",
          "headers": _RETRY_AFTER},
}


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


@router.post("/api/admin/worker/process-task", dependencies=[TaskAuthDep],
             response_model=TaskAnswer, responses=_ANSWERS)
async def process_task(
    body: TaskDelivery,
    request: Request,
    x_cloudtasks_taskname: Annotated[str | None, Header()] = None,
    x_cloudtasks_queuename: Annotated[str | None, Header()] = None,
    x_cloudtasks_taskretrycount: Annotated[str | None, Header()] = None,
    x_cloudtasks_taskexecutioncount: Annotated[str | None, Header()] = None,
    x_cloud_trace_context: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    processor: TaskProcessor = request.app.state.processor
    retry_count = _int_header(x_cloudtasks_taskretrycount)
    # Cloud Tasks' retry count also counts tries that never reached us, so it is a floor
    # under our own count, never the count itself.
    attempt_floor = retry_count + 1 if retry_count is not None else 0
    extra: dict[str, object] = {}
    if x_cloudtasks_taskname:
        extra["cloud_task_name"] = x_cloudtasks_taskname
        extra["queue"] = x_cloudtasks_queuename
        extra["execution_count"] = _int_header(x_cloudtasks_taskexecutioncount)
    if x_cloud_trace_context:
        settings = request.app.state.settings
        trace_id = x_cloud_trace_context.split("/", 1)[0]
        if settings.GCP_PROJECT and trace_id:
            extra["logging.googleapis.com/trace"] = (
                f"projects/{settings.GCP_PROJECT}/traces/{trace_id}"
            )
    outcome = await processor.process(body.task_id, attempt_floor=attempt_floor, log_extra=extra)
    headers = {}
    if outcome.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(outcome.retry_after_s)))
    return JSONResponse(outcome.body(), status_code=outcome.http_status, headers=headers)
