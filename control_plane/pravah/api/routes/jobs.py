"""The jobs resource: create, list, get, cancel, results.

Access: reading needs a viewer key, creating and cancelling an operator key;
callers see only their owner's jobs (admins see all), others' are 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from pravah import jobs as service
from pravah import results
from pravah.api.deps import (
    CapabilitiesDep,
    OffsetQuery,
    OperatorDep,
    SessionDep,
    SettingsDep,
    StateDep,
    ViewerDep,
)
from pravah.errors import ConflictError, GoneError, InvalidRequestError
from pravah.models import JobCreate, JobList, JobPublic, JobStatus
from pravah.retention import removed

router = APIRouter(prefix="/jobs", tags=["jobs"])


class ResultsPage(BaseModel):
    """One page of per-file results, with the task's summary."""

    summary: dict[str, Any] | None
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def create_job(
    caller: OperatorDep,
    data: JobCreate,
    session: SessionDep,
    capabilities: CapabilitiesDep,
    state: StateDep,
    response: Response,
) -> JobPublic:
    """Validate and queue a job; 202 with its Location."""
    job = await service.create_job(
        session,
        data,
        capabilities,
        settings=state.settings,
        owner=caller.owner,
        owner_filter=caller.owner_filter,
    )
    if state.worker is not None:
        state.worker.notify()
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.from_job(job)


@router.get("")
async def list_jobs(
    caller: ViewerDep,
    session: SessionDep,
    settings: SettingsDep,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: OffsetQuery = 0,
) -> JobList:
    """Jobs, newest first, optionally with one status; 422 for a limit above the maximum."""
    limit = service.page_limit(limit, settings)
    items, total = await service.list_jobs(
        session, job_status, limit, offset, owner=caller.owner_filter
    )
    return JobList(
        items=[JobPublic.from_job(j) for j in items], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}")
async def get_job(caller: ViewerDep, job_id: str, session: SessionDep) -> JobPublic:
    """One job with its progress."""
    return JobPublic.from_job(await service.get_job(session, job_id, caller.owner_filter))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_job(caller: OperatorDep, job_id: str, session: SessionDep) -> JobPublic:
    """Cancel: pending jobs at once, running ones shortly; 409 when already finished."""
    return JobPublic.from_job(await service.request_cancel(session, job_id, caller.owner_filter))


@router.post("/{job_id}/retry-failed", status_code=status.HTTP_202_ACCEPTED)
async def retry_failed(
    caller: OperatorDep, job_id: str, session: SessionDep, state: StateDep, response: Response
) -> JobPublic:
    """A new job over exactly the files that failed in this one; 409 when there are none."""
    job = await service.create_retry_job(
        session,
        job_id,
        state.settings.jobs_dir,
        owner_filter=caller.owner_filter,
    )
    if state.worker is not None:
        state.worker.notify()
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.from_job(job)


@router.get("/{job_id}/events", response_model=None)
async def job_events(caller: ViewerDep, job_id: str, state: StateDep) -> StreamingResponse:
    """Server-sent events: a `progress` event with the JobPublic on every change.

    The stream ends with an `end` event once the job is finished. It reads the
    job store at the persist interval, so any API instance can serve it.
    """
    async with state.db.session() as session:
        await service.get_job(session, job_id, caller.owner_filter)  # 404 before the stream
    interval = state.settings.progress_persist_interval

    async def stream() -> AsyncIterator[bytes]:
        last: str | None = None
        while True:
            async with state.db.session() as session:
                public = JobPublic.from_job(await service.get_job(session, job_id))
            body = public.model_dump_json()
            if body != last:
                last = body
                yield f"event: progress\ndata: {body}\n\n".encode()
            if public.status.is_terminal:
                yield b"event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(interval)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/results", response_model=None)
async def get_results(
    caller: ViewerDep,
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[Literal["json", "jsonl"], Query()] = "json",
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: OffsetQuery = 0,
) -> ResultsPage | StreamingResponse:
    """Per-file results: a page (json) or every line streamed (jsonl)."""
    job = await service.get_job(session, job_id, caller.owner_filter)
    job_status = JobStatus(job.status)
    if not job_status.is_terminal:
        raise ConflictError(
            f"job {job.id} is {job_status.value}; its results are available once it finishes"
        )
    if job.results_removed_at is not None:
        raise GoneError(removed(job.id, job.results_removed_at))
    parts = results.load_parts(Path(job.workspace)) if job.workspace else None
    if parts is None:
        reason = f": {job.error}" if job.error else ""
        raise ConflictError(f"job {job.id} ended {job_status.value} without results{reason}")
    workspace = Path(job.workspace or ".")
    if format == "jsonl":
        return StreamingResponse(
            results.iter_jsonl(parts, workspace), media_type="application/x-ndjson"
        )
    if limit is not None and limit > settings.results_max_limit:
        raise InvalidRequestError(
            f"limit {limit} is above the maximum of {settings.results_max_limit}; "
            "page with offset or use format=jsonl"
        )
    limit = limit or settings.results_default_limit
    items = results.read_page(parts, limit, offset, workspace)
    return ResultsPage(
        summary=job.summary,
        items=items,
        total=results.total_results(parts),
        limit=limit,
        offset=offset,
    )
