"""Batch mode's poll endpoint: one Cloud Tasks delivery plans a batch-mode job's batches
or moves one batch along (core/batch/poller.py), then schedules the next round."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from core.batch import poller
from worker.deps import TaskAuthDep
from worker.responses import error_responses

router = APIRouter(tags=["worker"])


class BatchPoll(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_id: UUID | None = None
    job_id: UUID | None = None
    round: int = 0


class BatchPollAnswer(BaseModel):
    outcome: str  # polled | no_batch_provider
    planned: list[str] = []
    states: list[str] = []


@router.post(poller.POLL_PATH, dependencies=[TaskAuthDep], response_model=BatchPollAnswer,
             responses=error_responses(401, 403, 413, 422, 503))
async def batch_poll(body: BatchPoll, request: Request) -> JSONResponse:
    runner = getattr(request.app.state, "batch_runner", None)
    if runner is None:
        # Not an openai worker: nothing here can poll; 200 so the queue drops the task.
        return JSONResponse({"outcome": "no_batch_provider"}, status_code=200)
    result: dict[str, Any] = await asyncio.to_thread(
        poller.handle_poll, runner, batch_id=body.batch_id, job_id=body.job_id,
        round_no=body.round)
    return JSONResponse({"outcome": "polled", **result}, status_code=200)
