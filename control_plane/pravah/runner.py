"""Driving one job through an engine: plan (List), run (Process), record.

Why a separate module: the worker (for queued jobs) and the CLI (`pravah run`,
in the foreground) run jobs the same way. One run has two concurrent parts:

- the *drive* task talks to the engine: List writes the listing as chunk
  files in the job's workspace (so totals, and with them an ETA, are known
  before processing starts), then one Process call streams the chunk refs and
  receives cumulative progress, batch results and the summary;
- the *monitor* loop (the caller's task) wakes every
  `progress_persist_interval` seconds, writes the latest counters to the DB,
  calls `on_progress`, and reads `cancel_requested`. When it is set, it
  cancels the drive task; the engine client then cancels the gRPC call, which
  stops the engine's work.

Progress is thus written at a bounded rate whatever the engine's event rate.
Per-file failures are counted and recorded, never fatal; a job fails only
when it cannot run at all (engine unreachable, source gone, bad chunk).
If the run itself is cancelled from outside, the row says what happens: a
job whose cancel was requested ends `cancelled` (Ctrl-C in `pravah run`); any
other goes back to `pending` so another worker retries it (worker shutdown).
Results part files are named per chunk and batch and written atomically, so a
retry overwrites them.

Observability: a run is the span `job.run`, a child of the `POST /jobs`
request through the trace context stored on the row (pravah.telemetry); the
engine calls are its children. Every log line of the run carries `job_id`
(bound in structlog's context vars for the run's task), and the job metrics
(queue time, duration, outcome by task) are recorded here.

Pipelines (:mod:`pravah.pipeline`) run their steps in order inside the same
drive task: each step is a List then a Process call; step N writes into
``workspace/steps/N`` and step N+1 lists that folder whole; the last step
writes to the job's destination. Counters add up over the steps, per-file
results of every step land in the same results folder (work ids carry the
step number from step 2 on), and the summary is the last step's with a
``steps`` list of every step's own. A job with ``max_error_ratio`` ends
``failed`` when a larger share of its files failed; otherwise failed files
are listed (``failures`` in the summary, first few) and the job completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from opentelemetry.trace import Span, StatusCode

from pravah import metrics, telemetry
from pravah.db import Database
from pravah.engine_client import (
    BatchEvent,
    ChunkInfo,
    ChunkWork,
    EngineClient,
    ItemDoneEvent,
    ProgressEvent,
    SummaryEvent,
)
from pravah.errors import NotFoundError, PravahError
from pravah.log import get_logger
from pravah.models import TERMINAL_STATUSES, Job, JobFilters, JobPublic, JobStatus, utcnow
from pravah.pipeline import max_error_ratio_of, steps_of
from pravah.results import RESULTS_DIR_NAME, Part, iter_jsonl, write_manifest
from pravah.settings import Settings

log = get_logger(__name__)

# Failed files named in a job's summary; all of them are in its results.
FAILURES_LISTED = 20

ProgressCallback = Callable[[JobPublic], None]


@dataclass
class _RunState:
    """What the drive task learned so far; read by the monitor."""

    files_total: int | None = None
    bytes_total: int | None = None
    listed_files: int = 0
    listed_bytes: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_done: int = 0
    bytes_failed: int = 0
    summary: dict[str, Any] | None = None
    listing: dict[str, Any] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    item_errors: list[str] = field(default_factory=list)
    work_items: int = 0
    # Totals of the pipeline steps already finished; events of the current
    # step's Process call are cumulative for that call only.
    base_files_done: int = 0
    base_files_failed: int = 0
    base_bytes_done: int = 0
    base_bytes_failed: int = 0
    base_files_total: int = 0
    base_bytes_total: int = 0
    step_summaries: list[dict[str, Any]] = field(default_factory=list)


def workspace_of(settings: Settings, job_id: str) -> Path:
    """`state_dir/jobs/<id>/`: chunks, results and the manifest of one job."""
    return settings.jobs_dir / job_id


async def run_job(
    job_id: str,
    settings: Settings,
    engine_url: str,
    on_progress: ProgressCallback | None = None,
    *,
    db: Database | None = None,
    worker_id: str | None = None,
) -> Job:
    """Run job `job_id` to its end on the engine at `engine_url`; return the final row.

    A pending job is marked running first (the CLI runs jobs this way; the
    worker claims them beforehand). Finished jobs are returned unchanged.
    """
    own_db = db is None
    database = db if db is not None else Database(settings)
    try:
        run = _JobRun(job_id, settings, engine_url, database, on_progress, worker_id)
        return await run.run()
    finally:
        if own_db:
            await database.dispose()


class _JobRun:
    def __init__(
        self,
        job_id: str,
        settings: Settings,
        engine_url: str,
        db: Database,
        on_progress: ProgressCallback | None,
        worker_id: str | None,
    ) -> None:
        self.job_id = job_id
        self.settings = settings
        self.engine_url = engine_url
        self.db = db
        self.on_progress = on_progress
        self.worker_id = worker_id
        self.state = _RunState()
        self.workspace = workspace_of(settings, job_id)
        self.log = log.bind(job_id=job_id, engine=engine_url)

    # ----------------------------------------------------------- lifecycle

    async def run(self) -> Job:
        with structlog.contextvars.bound_contextvars(job_id=self.job_id):
            job = await self._start()
            if JobStatus(job.status) != JobStatus.running:
                return job
            with telemetry.job_span(
                job.id,
                job.task,
                job.trace_context,
                **{"pravah.attempt": job.attempts, "pravah.worker_id": self.worker_id or ""},
            ) as span:
                final = await self._run_started(job)
                self._end_span(span, final)
                return final

    def _end_span(self, span: Span, job: Job) -> None:
        span.set_attributes(
            {
                "pravah.status": job.status,
                "pravah.files_total": job.files_total or 0,
                "pravah.files_done": job.files_done,
                "pravah.files_failed": job.files_failed,
                "pravah.bytes_done": job.bytes_done,
                "pravah.bytes_failed": job.bytes_failed,
                "pravah.chunks": self.state.work_items,
            }
        )
        if job.status == JobStatus.failed.value:
            span.set_status(StatusCode.ERROR, job.error or "failed")

    async def _run_started(self, job: Job) -> Job:
        drive = asyncio.create_task(self._drive(job), name=f"drive-{self.job_id}")
        user_cancelled = False
        try:
            while not drive.done():
                await asyncio.wait({drive}, timeout=self.settings.progress_persist_interval)
                if drive.done():
                    break
                if await self._persist_progress() and not user_cancelled:
                    user_cancelled = True
                    self.log.info("cancel requested; stopping the engine call")
                    drive.cancel()
        except asyncio.CancelledError:
            # Our own task was cancelled (worker shutdown, Ctrl-C): stop the
            # engine call, settle the row, and re-raise.
            drive.cancel()
            with contextlib.suppress(BaseException):
                await drive
            await self._release()
            raise
        return await self._finish(drive, user_cancelled)

    async def _start(self) -> Job:
        async with self.db.session() as session:
            job = await session.get(Job, self.job_id, populate_existing=True)
            if job is None:
                raise NotFoundError(f"no job with id {self.job_id!r}")
            status = JobStatus(job.status)
            if status in TERMINAL_STATUSES:
                return job
            now = utcnow()
            if job.cancel_requested:
                job.status = JobStatus.cancelled.value
                job.finished_at = now
                job.error = job.error or "cancelled before it started"
                metrics.job_ended(job.task, job.status, job.started_at, now)
            elif status == JobStatus.pending:
                job.status = JobStatus.running.value
                job.started_at = job.started_at or now
                job.attempts += 1
                job.heartbeat_at = now
                job.worker_id = self.worker_id or job.worker_id
            if job.status == JobStatus.running.value and job.attempts == 1 and job.started_at:
                # First start (the worker's claim, or just above): time in queue.
                metrics.job_started(job.task, job.created_at, job.started_at)
            job.workspace = str(self.workspace)
            job.updated_at = now
            # A retry starts from scratch: counters of an interrupted run are void.
            job.files_done = job.files_failed = job.bytes_done = job.bytes_failed = 0
            job.results_available = False
            session.add(job)
            await session.commit()
            await session.refresh(job)
        self._notify(job)
        return job

    # --------------------------------------------------------------- drive

    async def _drive(self, job: Job) -> None:
        chunks_dir = self.workspace / "chunks"
        results_dir = self.workspace / RESULTS_DIR_NAME
        steps_dir = self.workspace / "steps"
        for stale in (chunks_dir, results_dir, steps_dir, self.workspace / "parts.json"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        chunks_dir.mkdir(parents=True, exist_ok=True)
        steps = steps_of(job)
        state = self.state

        def on_chunk(chunk: ChunkInfo) -> None:
            state.listed_files += chunk.files
            state.listed_bytes += chunk.bytes

        async with EngineClient.from_settings(self.engine_url, self.settings) as client:
            for i, step in enumerate(steps, start=1):
                last = i == len(steps)
                if i == 1:
                    source, filters = job.source, JobFilters.model_validate(job.filters or {})
                else:
                    source, filters = str(steps_dir / str(i - 1)), JobFilters()
                # An intermediate folder is created by the engine when the step starts.
                destination = (job.destination or "") if last else str(steps_dir / str(i))
                step_chunks = chunks_dir if i == 1 else chunks_dir / f"step-{i}"
                step_chunks.mkdir(parents=True, exist_ok=True)
                listing = await client.list_to_chunks(
                    source, str(step_chunks), filters, on_chunk=on_chunk
                )
                state.files_total = state.base_files_total + listing.summary.files
                state.bytes_total = state.base_bytes_total + listing.summary.bytes
                step_listing = {
                    "files": listing.summary.files,
                    "bytes": listing.summary.bytes,
                    "directories": listing.summary.directories,
                    "errors": listing.summary.errors,
                    "elapsed_ms": listing.summary.elapsed_ms,
                    "chunks": len(listing.chunks),
                    "error_examples": [
                        {"path": e.path, "kind": e.kind, "message": e.message}
                        for e in listing.errors[:10]
                    ],
                }
                if i == 1:
                    state.listing = step_listing
                self.log.info(
                    "listing done",
                    step=i,
                    task=step.task,
                    files=listing.summary.files,
                    bytes=listing.summary.bytes,
                    chunks=len(listing.chunks),
                )
                prefix = "" if i == 1 else f"s{i}-"
                work = [
                    ChunkWork(
                        id=f"{prefix}chunk-{c.index:06d}", uri=c.uri, root=listing.summary.root
                    )
                    for c in listing.chunks
                ]
                state.work_items += len(work)
                # Created only now: a job that failed before processing has no results.
                results_dir.mkdir(parents=True, exist_ok=True)
                interval_ms = max(50, min(250, int(self.settings.progress_persist_interval * 500)))
                state.summary = None
                async for event in client.process(
                    step.task,
                    work,
                    options=step.options,
                    results_dir=str(results_dir),
                    destination=destination,
                    job_id=job.id,
                    progress_interval_ms=interval_ms,
                ):
                    self._apply(event)
                state.step_summaries.append(
                    {
                        "step": i,
                        "task": step.task,
                        "files": listing.summary.files,
                        "bytes": listing.summary.bytes,
                        "files_failed": state.files_failed - state.base_files_failed,
                        "summary": state.summary,
                        "listing": step_listing,
                    }
                )
                state.base_files_done = state.files_done
                state.base_files_failed = state.files_failed
                state.base_bytes_done = state.bytes_done
                state.base_bytes_failed = state.bytes_failed
                state.base_files_total = state.files_total or 0
                state.base_bytes_total = state.bytes_total or 0

    def _apply(self, event: ProgressEvent | BatchEvent | ItemDoneEvent | SummaryEvent) -> None:
        state = self.state
        if isinstance(event, ProgressEvent):
            state.files_done = state.base_files_done + event.files_done
            state.files_failed = state.base_files_failed + event.files_failed
            state.bytes_done = state.base_bytes_done + event.bytes_done
            state.bytes_failed = state.base_bytes_failed + event.bytes_failed
        elif isinstance(event, BatchEvent):
            if event.part_uri:
                state.parts.append(
                    Part(
                        path=event.part_uri,
                        files=event.files,
                        work_id=event.work_id,
                        sequence=event.sequence,
                    )
                )
        elif isinstance(event, ItemDoneEvent):
            if event.error is not None:
                state.item_errors.append(f"{event.work_id}: {event.error.message}")
        else:
            totals = event.totals
            state.files_done = state.base_files_done + totals.files_done
            state.files_failed = state.base_files_failed + totals.files_failed
            state.bytes_done = state.base_bytes_done + totals.bytes_done
            state.bytes_failed = state.base_bytes_failed + totals.bytes_failed
            state.summary = event.summary

    # ------------------------------------------------------------- records

    def _copy_counters(self, job: Job) -> None:
        s = self.state
        job.files_total = s.files_total
        job.bytes_total = s.bytes_total
        job.files_done = s.files_done
        job.files_failed = s.files_failed
        job.bytes_done = s.bytes_done
        job.bytes_failed = s.bytes_failed

    async def _persist_progress(self) -> bool:
        """Write counters and heartbeat; return True when a cancel was requested."""
        try:
            async with self.db.session() as session:
                job = await session.get(Job, self.job_id, populate_existing=True)
                if job is None:  # deleted under us: stop
                    return True
                self._copy_counters(job)
                now = utcnow()
                job.updated_at = now
                job.heartbeat_at = now
                session.add(job)
                await session.commit()
                await session.refresh(job)
        except Exception as exc:  # a busy DB must not kill the run; try again next tick
            self.log.warning("could not persist progress", error=str(exc))
            return False
        self._notify(job)
        return job.cancel_requested

    async def _finish(self, drive: asyncio.Task[None], user_cancelled: bool) -> Job:
        status = JobStatus.completed
        error: str | None = None
        try:
            await drive
        except asyncio.CancelledError:
            status, error = JobStatus.cancelled, "cancelled by request"
        except NotFoundError as exc:
            status, error = JobStatus.failed, str(exc)
        except PravahError as exc:
            status, error = JobStatus.failed, str(exc)
        except Exception as exc:
            self.log.exception("job run crashed")
            status, error = JobStatus.failed, f"internal error: {type(exc).__name__}: {exc}"
        if status == JobStatus.completed and user_cancelled:
            status, error = JobStatus.cancelled, "cancelled by request"
        if status == JobStatus.completed and self.state.item_errors:
            status = JobStatus.failed
            first = self.state.item_errors[0]
            error = (
                f"{len(self.state.item_errors)} of {self.state.work_items} work items "
                f"could not be processed; first: {first}"
            )
        ratio = max_error_ratio_of(job_row) if (job_row := await self._row()) else None
        s = self.state
        if (
            status == JobStatus.completed
            and ratio is not None
            and s.files_done > 0
            and s.files_failed / s.files_done > ratio
        ):
            status = JobStatus.failed
            error = (
                f"{s.files_failed} of {s.files_done} files failed "
                f"({100 * s.files_failed / s.files_done:.1f}%), more than max_error_ratio "
                f"({ratio:g}); see the job's results for each file's error"
            )
        results_available = False
        if self.state.parts:
            try:
                write_manifest(self.workspace, self.state.parts)
                results_available = True
            except OSError as exc:
                self.log.warning("could not write the results manifest", error=str(exc))
        # Intermediate outputs of a pipeline are scratch: the results stay.
        steps_dir = self.workspace / "steps"
        await asyncio.to_thread(shutil.rmtree, steps_dir, True)
        summary = dict(self.state.summary) if self.state.summary is not None else None
        if summary is not None and self.state.listing:
            summary.setdefault("listing", self.state.listing)
        if summary is not None and len(s.step_summaries) > 1:
            summary["steps"] = s.step_summaries
        if summary is not None and s.files_failed and self.state.parts:
            summary["failures"] = self._first_failures()
        async with self.db.session() as session:
            job = await session.get(Job, self.job_id, populate_existing=True)
            if job is None:
                raise NotFoundError(f"job {self.job_id} vanished while it ran")
            self._copy_counters(job)
            now = utcnow()
            job.status = status.value
            job.error = error
            job.summary = summary
            job.results_available = results_available
            job.finished_at = now
            job.updated_at = now
            session.add(job)
            await session.commit()
            await session.refresh(job)
        metrics.job_ended(job.task, job.status, job.started_at, job.finished_at)
        self.log.info(
            "job finished",
            status=status.value,
            files_done=job.files_done,
            files_failed=job.files_failed,
            error=error,
        )
        self._notify(job)
        return job

    async def _row(self) -> Job | None:
        async with self.db.session() as session:
            return await session.get(Job, self.job_id, populate_existing=True)

    def _first_failures(self) -> list[dict[str, Any]]:
        """The first failed files (path, error), read from the part files."""
        found: list[dict[str, Any]] = []
        with contextlib.suppress(OSError, ValueError):
            for raw in iter_jsonl(self.state.parts, self.workspace):
                if b'"error"' not in raw:
                    continue
                line = json.loads(raw)
                if isinstance(line, dict) and line.get("error"):
                    found.append(
                        {k: line.get(k) for k in ("path", "error", "error_kind") if k in line}
                    )
                    if len(found) >= FAILURES_LISTED:
                        break
        return found

    async def _release(self) -> None:
        """Settle a job whose run was stopped from outside: cancelled or requeued."""
        with contextlib.suppress(Exception):
            async with self.db.session() as session:
                job = await session.get(Job, self.job_id, populate_existing=True)
                if job is None or job.status != JobStatus.running.value:
                    return
                now = utcnow()
                job.updated_at = now
                if job.cancel_requested:
                    self._copy_counters(job)
                    job.status = JobStatus.cancelled.value
                    job.finished_at = now
                    job.error = job.error or "cancelled by request"
                    metrics.job_ended(job.task, job.status, job.started_at, now)
                else:
                    job.status = JobStatus.pending.value
                    job.worker_id = None
                session.add(job)
                await session.commit()
                self.log.info("job settled after an outside stop", status=job.status)

    def _notify(self, job: Job) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(JobPublic.from_job(job))
        except Exception:  # a broken display must not stop the job
            self.log.exception("on_progress callback failed")
