"""Endpoints the web dashboard needs beside the core resources.

- `POST /jobs/dry-run`: what a job would process (counts and bytes), by
  validating the request exactly as `POST /jobs` does and asking an engine to
  list the source; nothing is stored.
- `GET /jobs/{id}/errors`: the per-file failures of a finished job (path,
  kind, message), found by scanning its result parts.
- `GET /jobs/{id}/output?path=`: one output file a task wrote (thumbnails
  for the results grid), served only from inside the job's destination or
  workspace.
- `GET /events/jobs`: server-sent events with a page of the jobs list on
  every change, so the list updates without the browser polling. Like
  `/jobs/{id}/events` it reads the job store at the persist interval, so any
  API instance can serve it; sse-starlette ends the stream when the server
  shuts down, so an open browser tab never holds up Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sse_starlette import EventSourceResponse

from pravah import jobs as service
from pravah import results
from pravah.api.deps import (
    CapabilitiesDep,
    OperatorDep,
    SessionDep,
    SettingsDep,
    StateDep,
    ViewerDep,
)
from pravah.engine_client import ChunkInfo
from pravah.errors import ConflictError, GoneError, NotFoundError
from pravah.models import JobCreate, JobList, JobPublic, JobStatus
from pravah.retention import removed

router = APIRouter(tags=["dashboard"])

_EXAMPLES = 10


def _chunk_examples(chunks: list[ChunkInfo], limit: int) -> list[dict[str, Any]]:
    """The first `limit` entries (path and size) of the listing chunks."""
    found: list[dict[str, Any]] = []
    for chunk in chunks:
        path = results.uri_to_path(chunk.uri)
        try:
            with path.open("rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    entry = json.loads(line)
                    found.append({"path": entry.get("p", ""), "size": entry.get("s")})
                    if len(found) >= limit:
                        return found
        except (OSError, ValueError):
            continue
    return found


@router.post("/jobs/dry-run")
async def dry_run(
    caller: OperatorDep, data: JobCreate, capabilities: CapabilitiesDep, state: StateDep
) -> dict[str, Any]:
    """List what a job would process: files, bytes, folders, unreadable entries, examples.

    Checked as `POST /jobs` checks a job (a task or a pipeline, options,
    destination), so a preview never approves a job the API then refuses.
    """
    source, destination = service.check_request(
        data, capabilities, state.settings, caller.owner_filter
    )
    state.settings.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dry-run-", dir=state.settings.state_dir) as tmp:
        listing = await state.client().list_to_chunks(
            str(source), tmp, data.filters, max_errors=_EXAMPLES
        )
        examples = await anyio.to_thread.run_sync(_chunk_examples, listing.chunks, _EXAMPLES)
    s = listing.summary
    steps = data.steps()
    return {
        "task": steps[0].task if len(steps) == 1 else None,
        "steps": [step.task for step in steps],
        "source": str(source),
        "destination": destination,
        "files": s.files,
        "bytes": s.bytes,
        "directories": s.directories,
        "errors": s.errors,
        "elapsed_ms": s.elapsed_ms,
        "examples": examples,
        "error_examples": [
            {"path": e.path, "kind": e.kind, "message": e.message} for e in listing.errors
        ],
    }


def _scan_errors(parts: list[results.Part], workspace: Path, limit: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    total = 0
    for line in results.iter_jsonl(parts, workspace):
        if b'"error"' not in line:
            continue  # cheap pre-check: most lines are successes
        item = json.loads(line)
        if "error" in item:
            total += 1
            if len(items) < limit:
                items.append(item)
    return items, total


@router.get("/jobs/{job_id}/errors")
async def job_errors(
    caller: ViewerDep,
    job_id: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The first `limit` per-file failures of a finished job and how many there are."""
    job = await service.get_job(session, job_id, caller.owner_filter)
    if not JobStatus(job.status).is_terminal:
        raise ConflictError(f"job {job.id} is {job.status}; its errors are listed once it ends")
    if job.results_removed_at is not None:
        raise GoneError(removed(job.id, job.results_removed_at))
    workspace = Path(job.workspace or ".")
    parts = results.load_parts(workspace) if job.workspace else None
    if parts is None:
        return {"items": [], "total": 0, "limit": limit}
    items, total = await anyio.to_thread.run_sync(_scan_errors, parts, workspace, limit)
    return {"items": items, "total": total, "limit": limit}


@router.get("/jobs/{job_id}/output", response_model=None)
async def job_output(
    caller: ViewerDep,
    job_id: str,
    session: SessionDep,
    path: Annotated[str, Query(min_length=1, max_length=4096)],
) -> FileResponse:
    """A file the job wrote; 404 unless it lies inside its destination or workspace."""
    if "\x00" in path:
        raise NotFoundError(f"job {job_id} has no output file {path!r}")
    job = await service.get_job(session, job_id, caller.owner_filter)
    roots = [r for r in (job.destination, job.workspace) if r]
    target = await anyio.to_thread.run_sync(_output_file, roots, path)
    if target is None:
        raise NotFoundError(f"job {job.id} has no output file {path!r}")
    return FileResponse(target)


def _output_file(roots: list[str], path: str) -> Path | None:
    # Hostile names (overlong, symlink loops, NUL) are simply not found.
    try:
        candidate = results.uri_to_path(path)
        for root_text in roots:
            root = Path(root_text).resolve()
            target = (candidate if candidate.is_absolute() else root / candidate).resolve()
            if target.is_relative_to(root) and target.is_file():
                return target
    except (OSError, RuntimeError, ValueError):
        return None
    return None


@router.get("/events/jobs", response_model=None)
async def jobs_events(
    caller: ViewerDep,
    state: StateDep,
    settings: SettingsDep,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> EventSourceResponse:
    """Server-sent `jobs` events: the first page of jobs (newest first) on every change."""
    page = service.page_limit(limit, settings)
    interval = settings.progress_persist_interval

    async def stream() -> AsyncIterator[dict[str, str]]:
        last: str | None = None
        while True:
            async with state.db.session() as session:
                items, total = await service.list_jobs(
                    session, job_status, page, 0, owner=caller.owner_filter
                )
                body = JobList(
                    items=[JobPublic.from_job(j) for j in items],
                    total=total,
                    limit=page,
                    offset=0,
                ).model_dump_json()
            # Rates of running jobs change every tick; send only real changes
            # (counters, statuses), compared without the computed rates.
            key = json.dumps(
                [[j.id, j.status, j.files_done, j.bytes_done, str(j.updated_at)] for j in items]
                + [total]
            )
            if key != last:
                last = key
                yield {"event": "jobs", "data": body}
            await asyncio.sleep(interval)

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-cache"})
