"""The images ZIP of a job, streamed: one image in memory at a time, whatever the job's
size. Reached with a signed link from the dashboard (core.jobs.export_links) or with the admin
API key."""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from core.jobs import export, export_links, views
from core.storage import get_storage
from worker.deps import SettingsDep, require_api_key
from worker.responses import error_responses

router = APIRouter(prefix="/api/exports", tags=["exports"],
                   responses=error_responses(401, 404))


@router.get("/jobs/{job_id}/images.zip",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}},
                             "description": "The images and manifest.csv, streamed."}})
async def images_zip(
    job_id: UUID, request: Request, settings: SettingsDep,
    expires: Annotated[int | None, Query(ge=0)] = None,
    sig: Annotated[str | None, Query(max_length=128)] = None,
) -> StreamingResponse:
    key = export_links.signing_key(settings)
    if expires is None or not export_links.link_ok(key, job_id, expires, sig):
        # Not a (valid) link: the admin key then, as for the rest of the admin API.
        await require_api_key(settings, request.headers.get("x-api-key"), None)
    await asyncio.to_thread(views.get_job, job_id)  # a 404 before any byte is sent
    # A sync generator: Starlette runs each step in its thread pool, so storage reads
    # and database pages never block the event loop.
    return StreamingResponse(
        export.iter_images_zip(job_id, get_storage(settings)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-images.zip"',
                 "Cache-Control": "no-store"})
