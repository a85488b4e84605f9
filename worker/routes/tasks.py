"""The task endpoint: the one URL Cloud Tasks and the local dispatcher deliver to."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.background import BackgroundTask

from core.delivery.processing import TaskProcessor
from core.worker_url import TASK_PATH
from worker.deps import TaskAuthDep
from worker.responses import DeliveryAnswer, ErrorBody, error_responses

if TYPE_CHECKING:
    from core.dispatch.cloudtasks.handover import Handover

log = logging.getLogger(__name__)

router = APIRouter(tags=["worker"])


class TaskDelivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: UUID


class TaskAnswer(BaseModel):
    """What the delivery came to; the status code tells the queue whether to retry."""

    task_id: str
    # succeeded | failed | retry | duplicate | busy | not_due | stopping | unknown_task |
    # lost_lease | superseded (Cloud Tasks: a delivery of an older dispatch generation)
    outcome: str
    attempt: int | None = None
    error_code: str | None = None


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before the next try.",
                                "schema": {"type": "string"}}}
# 2xx: done, do not retry. 429/503: retry later (rate limited, busy, upstream or database
# down). 500: retry with backoff. The delivery contract: docs/architecture.md.
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


@router.post(TASK_PATH, dependencies=[TaskAuthDep],
             response_model=TaskAnswer, responses=_ANSWERS)
async def process_task(
    body: TaskDelivery,
    request: Request,
    x_cloudtasks_taskname: Annotated[str | None, Header()] = None,
    x_cloudtasks_queuename: Annotated[str | None, Header()] = None,
    x_cloudtasks_taskretrycount: Annotated[str | None, Header()] = None,
    x_cloudtasks_taskexecutioncount: Annotated[str | None, Header()] = None,
    x_cloud_trace_context: Annotated[str | None, Header()] = None,
) -> Response:
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
    if x_cloudtasks_taskname and request.app.state.settings.USE_CLOUD_TASKS:
        return await _cloud_tasks_delivery(request, processor, body.task_id,
                                           x_cloudtasks_taskname, extra)
    outcome = await processor.process(body.task_id, attempt_floor=attempt_floor, log_extra=extra)
    return DeliveryAnswer(outcome)


# Outcomes after which the task no longer holds a place in the Cloud Tasks window.
WINDOW_FREED = frozenset({"succeeded", "failed", "duplicate", "unknown_task"})


def _refill_after(response: JSONResponse, request: Request, outcome: str) -> JSONResponse:
    """A task left the Cloud Tasks window; refill it from the table
    (core/dispatch/cloudtasks/window.py) once this answer is sent (Starlette runs the
    background task after the response, in a thread): the delivery does not wait for it,
    and Cloud Tasks has let go of this task before the next one is created, so the queue
    holds no more than the window."""
    refiller = getattr(request.app.state, "refiller", None)
    if refiller is not None and outcome in WINDOW_FREED:
        response.background = BackgroundTask(refiller.request)
    return response


def _handover(request: Request) -> Handover:
    # Imported here: the local queue never needs the Cloud Tasks client.
    from core.dispatch import get_dispatcher
    from core.dispatch.cloudtasks.handover import Handover

    handover: Handover | None = getattr(request.app.state, "handover", None)
    if handover is None:
        dispatcher = get_dispatcher(request.app.state.settings)
        handover = Handover(dispatcher, request.app.state.engine)  # type: ignore[arg-type]
        request.app.state.handover = handover
    return handover


async def _cloud_tasks_delivery(request: Request, processor: TaskProcessor, task_id: UUID,
                                task_name: str, extra: dict[str, object]) -> JSONResponse:
    """Cloud Tasks carries, the table decides (core/dispatch/cloudtasks/handover.py): a superseded
    generation changes nothing; an unfinished task becomes the next generation's Cloud Task
    before this delivery is answered 2xx."""
    from core.dispatch.cloudtasks.handover import HANDOVER_OUTCOMES, answer_for, generation_of

    handover = _handover(request)
    generation = generation_of(task_id, task_name)
    if await handover.superseded(task_id, generation):
        log.info("delivery of a superseded generation ignored",
                 extra={"action": "process_task_skip", "task_id": str(task_id), **extra,
                        "outcome": "superseded"})
        return JSONResponse({"task_id": str(task_id), "outcome": "superseded"},
                            status_code=200)
    # The queue's retry count counts deliveries that never reached us and restarts with
    # each generation: the table's own count is the attempt.
    outcome = await processor.process(task_id, log_extra=extra)
    if outcome.outcome == "lost_lease":
        # Another delivery took the task over and answers for it: nothing to retry here.
        return JSONResponse(outcome.body(), status_code=200)
    if outcome.outcome not in HANDOVER_OUTCOMES:
        # No Retry-After here: on a 429/503 Cloud Tasks slows the whole queue by it, and a
        # delivery that did not reach the task (stopping, database down) is for the queue's
        # own backoff.
        return _refill_after(JSONResponse(outcome.body(), status_code=outcome.http_status),
                             request, outcome.outcome)
    result = await handover.hand_over(task_id, generation)
    status, body, headers = answer_for(outcome.body(), result)
    return JSONResponse(body, status_code=status, headers=headers)
