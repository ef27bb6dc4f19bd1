"""Driving one job through an engine: plan (List), run (Process), record.

Why a separate module: the worker (for queued jobs) and the CLI (`pravah run`,
in the foreground) run jobs the same way. One run has two concurrent parts:

- the *drive* task talks to the engine: List writes the listing as chunk
  files in the job's workspace, and Process calls (one per chunk, spread by
  pravah.engine_pool) stream the chunk refs and receive cumulative
  progress, batch results and the summary. On a fresh job each chunk goes
  to Process as soon as List wrote it, so the walk (and the engine's sync of
  the chunk files) overlaps the work instead of preceding it; totals, and
  with them an ETA, are known once the listing ends. The checkpoints do not
  change: chunk rows are stored with the job's listing once it is whole
  (see `_JobRun._list_and_run`);
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
drive task: each step is planned (listed into chunks) and run on the engines
like a single task; step N writes into ``workspace/steps/N`` and step N+1
lists that folder whole; the last step writes to the job's destination.
Per-file results of every step land in the same results folder (work ids
carry the step number from step 2 on), and the summary is the last step's
with a ``steps`` list of every step's own. Every step resumes from its
checkpoints: the ``steps`` folders stay while the job may be retried or
taken over, so a resumed job skips the steps already done and redoes only
the unfinished chunks of the step it was in; they go once the job ends. A job with
``max_error_ratio`` ends ``failed`` when a larger share of its files failed;
otherwise failed files are listed (``failures`` in the summary, first few)
and the job completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from opentelemetry.trace import Span, StatusCode

from pravah import (
    chunks,
    duplicates,
    engine_pool,
    incremental,
    metrics,
    queue,
    sandbox,
    telemetry,
)
from pravah.db import Database, retrying, store_full
from pravah.engine_client import (
    Capabilities,
    ChunkInfo,
    ChunkWork,
    EngineClient,
    ListResult,
    ProgressEvent,
)
from pravah.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
    PravahError,
)
from pravah.log import get_logger
from pravah.models import TERMINAL_STATUSES, Job, JobFilters, JobPublic, JobStatus, utcnow
from pravah.pipeline import max_error_ratio_of, steps_of
from pravah.results import RESULTS_DIR_NAME, Part, iter_jsonl, write_manifest
from pravah.settings import Settings
from pravah.summaries import merge_summaries

log = get_logger(__name__)

ProgressCallback = Callable[[JobPublic], None]
# How many failed files a job's summary lists (the results have them all).
FAILURES_LISTED = 20


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
    # Counters of the chunks already finished (this run or an earlier one)
    # and the latest cumulative progress of each chunk call in flight.
    base: chunks.Totals = field(default_factory=chunks.Totals)
    in_flight: dict[str, ProgressEvent] = field(default_factory=dict)
    # Why the monitor stopped the drive: "cancel", "timeout" or "lost".
    stopped: str | None = None
    # One entry per finished step of a pipeline.
    step_summaries: list[dict[str, Any]] = field(default_factory=list)
    # Finished chunks per step, of every run of the job.
    chunks_done: dict[int, int] = field(default_factory=dict)


def _size_independent_in(caps: Capabilities, task: str) -> bool:
    """Whether `caps` declare `task`'s work per file independent of file size."""
    info = caps.tasks.get(task)
    return info is not None and info.size_independent


def workspace_of(settings: Settings, job_id: str) -> Path:
    """`state_dir/jobs/<id>/`: chunks, results and the manifest of one job."""
    return settings.jobs_dir / job_id


async def run_job(
    job_id: str,
    settings: Settings,
    engine_url: str | Sequence[str],
    on_progress: ProgressCallback | None = None,
    *,
    db: Database | None = None,
    worker_id: str | None = None,
    capabilities: Mapping[str, Capabilities] | None = None,
) -> Job:
    """Run job `job_id` to its end on the engine(s) at `engine_url`; return the final row.

    With several engine URLs the chunks are spread over all of them
    (pravah.engine_pool). `capabilities` (by engine URL) are what the caller
    already asked of those engines (`pravah run` validated the job with
    them); an engine not in it is asked for its own.

    A pending job is marked running first (the CLI runs jobs this way; the
    worker claims them beforehand). Finished jobs are returned unchanged.
    """
    own_db = db is None
    database = db if db is not None else Database(settings)
    try:
        run = _JobRun(job_id, settings, engine_url, database, on_progress, worker_id)
        run.capabilities = dict(capabilities or {})
        return await run.run()
    finally:
        if own_db:
            await database.dispose()


class _JobRun:
    def __init__(
        self,
        job_id: str,
        settings: Settings,
        engine_url: str | Sequence[str],
        db: Database,
        on_progress: ProgressCallback | None,
        worker_id: str | None,
    ) -> None:
        self.job_id = job_id
        self.settings = settings
        self.engine_urls = [engine_url] if isinstance(engine_url, str) else list(engine_url)
        self.db = db
        self.on_progress = on_progress
        self.worker_id = worker_id
        self.state = _RunState()
        self.capabilities: dict[str, Capabilities] = {}
        self.workspace = workspace_of(settings, job_id)
        self.log = log.bind(job_id=job_id, engines=self.engine_urls)
        # The error that keeps progress from being stored, logged when it
        # first appears, not on every tick (a full disk logged the same
        # warning twice a second).
        self._persist_error: str | None = None

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
        loop = asyncio.get_running_loop()
        timeout = job.timeout_seconds or self.settings.job_timeout
        deadline = loop.time() + timeout if timeout else None
        try:
            while not drive.done():
                await asyncio.wait({drive}, timeout=self.settings.progress_persist_interval)
                if drive.done() or self.state.stopped:
                    break
                reason = await self._persist_progress()
                if reason is None and deadline is not None and loop.time() > deadline:
                    reason = "timeout"
                if reason is not None:
                    self.state.stopped = reason
                    self.log.info("stopping the engine calls", reason=reason)
                    drive.cancel()
        except asyncio.CancelledError:
            # Our own task was cancelled (worker shutdown, Ctrl-C): stop the
            # engine call, settle the row, and re-raise.
            drive.cancel()
            with contextlib.suppress(BaseException):
                await drive
            await self._release()
            raise
        return await self._finish(drive, job)

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
        steps = steps_of(job)
        steps_dir = self.workspace / "steps"
        if job.destination:
            await asyncio.to_thread(self._check_destination_again, job)
        for i, step in enumerate(steps, start=1):
            last = i == len(steps)
            if i == 1:
                # Ages count back from the job's creation, the same on a retry.
                filters = JobFilters.model_validate(job.filters or {}).resolved(job.created_at)
                source = job.source
            else:
                source, filters = str(steps_dir / str(i - 1)), JobFilters()
            # An intermediate folder is created by the engine when the step starts.
            destination = (job.destination or "") if last else str(steps_dir / str(i))
            await self._run_step(
                job,
                step=i,
                task=step.task,
                options=step.options,
                source=source,
                filters=filters,
                destination=destination,
            )
            if len(steps) > 1:
                self.state.step_summaries.append(
                    {
                        "step": i,
                        "task": step.task,
                        "files": self.state.files_total,
                        "bytes": self.state.bytes_total,
                        "files_failed": self.state.files_failed,
                        "summary": self.state.summary,
                        "listing": self.state.listing,
                    }
                )

    def _check_destination_again(self, job: Job) -> None:
        """The destination checked as when the job was made, now that it runs.

        Folders change between the two, queued jobs and schedules most: a
        symlink made since can put the destination inside the source,
        where outputs would be listed as inputs. InvalidRequestError fails
        the job before anything is written.
        """
        local = "://" not in job.source
        source: Path | str = Path(os.path.realpath(job.source)) if local else job.source
        sandbox.check_destination(job.destination, source, self.settings)

    async def _list(
        self,
        source: str,
        chunk_dir: Path,
        filters: JobFilters,
        then: Callable[[ChunkInfo], None] | None = None,
        *,
        task: str | None = None,
    ) -> ListResult:
        """List on the first engine that answers (any engine sees the same source).

        `then` gets every chunk as it arrives (to process it at once); once a
        chunk went there, a failed listing is not retried on the next engine
        but raised (the job is retried as a whole: nothing was recorded).
        `task`, when given, is the task the listing is for: one whose work
        does not grow with file size (csv-header) is listed without sizes,
        which saves a stat per file (the engine still stats what the filters
        need); its progress then counts files.
        """
        state = self.state
        given = 0

        def on_chunk(chunk: ChunkInfo) -> None:
            nonlocal given
            state.listed_files += chunk.files
            state.listed_bytes += chunk.bytes
            if then is not None:
                given += 1
                then(chunk)

        last: PravahError | None = None
        for url in self.engine_urls:
            state.listed_files = state.listed_bytes = 0
            try:
                async with EngineClient.from_settings(url, self.settings) as client:
                    sizes = task is None or not await self._size_independent(client, url, task)
                    return await client.list_to_chunks(
                        source,
                        str(chunk_dir),
                        filters,
                        batch_size=self.settings.chunk_files,
                        on_chunk=on_chunk,
                        sizes=sizes,
                    )
            except (EngineUnavailableError, EngineError) as exc:
                if given:
                    raise
                self.log.warning("listing failed on an engine; trying the next", engine=url)
                last = exc
        assert last is not None
        raise last

    async def _task_size_independent(self, task: str) -> bool:
        """`_size_independent` by the capabilities already asked, else by the
        first engine that answers."""
        known = next(iter(self.capabilities.values()), None)
        if known is not None:
            return _size_independent_in(known, task)
        last: PravahError | None = None
        for url in self.engine_urls:
            try:
                async with EngineClient.from_settings(url, self.settings) as client:
                    return await self._size_independent(client, url, task)
            except (EngineUnavailableError, EngineError) as exc:
                last = exc
        assert last is not None
        raise last

    async def _size_independent(self, client: EngineClient, url: str, task: str) -> bool:
        """Whether `task`'s work per file ignores file size, by this engine's capabilities.

        Asked once per engine and kept: the engine pool reuses them.
        """
        caps = self.capabilities.get(url)
        if caps is None:
            caps = self.capabilities[url] = await client.capabilities()
        return _size_independent_in(caps, task)

    async def _plan(
        self, job: Job, step: int, source: str, filters: JobFilters, task: str
    ) -> tuple[dict[str, Any], list[Any]]:
        """The step's listing and chunk rows: stored ones when the job resumes, else new."""
        # Step 1's rows are stored with the job's listing in one transaction,
        # so a job with no listing has none to resume from: no need to look.
        fresh = step == 1 and job.listing is None
        rows = [] if fresh else await chunks.load(self.db, self.job_id, step)
        if step == 1 and job.listing is not None and (rows or not job.listing.get("chunks")):
            done = sum(1 for r in rows if r.status != "pending")
            self.log.info("resuming from checkpoints", chunks=len(rows), finished=done)
            return job.listing, rows
        if step > 1 and rows and await asyncio.to_thread(Path(source).is_dir):
            # A later step's rows exist only once its listing (of the previous
            # step's outputs, kept in the workspace while the job may resume)
            # was recorded whole, like step 1's.
            done = sum(1 for r in rows if r.status != "pending")
            self.log.info(
                "resuming step from checkpoints", step=step, chunks=len(rows), finished=done
            )
            # Listed without sizes when the task ignores them: a total of
            # zero bytes would then be wrong, not merely unknown.
            sized = not await self._task_size_independent(task)
            info = {
                "files": sum(r.files for r in rows),
                "bytes": sum(r.bytes for r in rows) if sized else None,
                "chunks": len(rows),
                "root": source,
            }
            return info, rows
        chunks_dir = self._fresh_chunks_dir(step)
        if job.retry_of is not None:
            info, chunk_infos = await self._plan_retry(job, chunks_dir)
        else:
            info, chunk_infos = await self._plan_listing(job, source, chunks_dir, filters, task)
        try:
            rows = await chunks.record_listing(
                self.db, self.job_id, info, chunk_infos, worker_id=self.worker_id, step=step
            )
        except PermissionError:
            self.state.stopped = "lost"
            raise asyncio.CancelledError() from None
        return info, rows

    def _fresh_chunks_dir(self, step: int) -> Path:
        """The empty chunk folder of a step planned anew, what an earlier try left removed."""
        if step == 1:
            chunks_dir = self.workspace / "chunks"
            stale_paths = [
                chunks_dir,
                self.workspace / RESULTS_DIR_NAME,
                self.workspace / "steps",
                self.workspace / "parts.json",
            ]
        else:  # a later step keeps the earlier steps' results
            chunks_dir = self.workspace / "chunks" / f"step-{step}"
            stale_paths = [chunks_dir]
        for stale in stale_paths:
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        chunks_dir.mkdir(parents=True, exist_ok=True)
        return chunks_dir

    async def _plan_retry(self, job: Job, chunks_dir: Path) -> tuple[dict[str, Any], list[Any]]:
        """Chunks of exactly the files that failed in the job this one retries."""
        assert job.retry_of is not None
        parent = workspace_of(self.settings, job.retry_of)
        entries = await asyncio.to_thread(incremental.failed_entries, parent)
        chunk_infos = await asyncio.to_thread(incremental.write_chunks, chunks_dir, entries)
        info: dict[str, Any] = {
            "files": len(entries),
            "bytes": sum(c.bytes for c in chunk_infos),
            "chunks": len(chunk_infos),
            "root": job.source,
            "retry_of": job.retry_of,
        }
        self.log.info("retrying failed files", files=len(entries), retry_of=job.retry_of)
        return info, chunk_infos

    async def _plan_listing(
        self, job: Job, source: str, chunks_dir: Path, filters: JobFilters, task: str
    ) -> tuple[dict[str, Any], list[Any]]:
        incremental_run = job.incremental != "off" and bool(job.lineage)
        # An incremental run compares sizes and times with its manifest.
        listing = await self._list(
            source, chunks_dir, filters, task=None if incremental_run else task
        )
        info = self._listing_info(listing)
        chunk_infos = list(listing.chunks)
        if incremental_run and job.lineage:
            manifest = incremental.load_manifest(self.settings.state_dir, job.lineage)
            keep, skipped = await asyncio.to_thread(
                incremental.select_changed,
                chunk_infos,
                Path(listing.summary.root),
                manifest,
                job.incremental,
            )
            chunk_infos = await asyncio.to_thread(incremental.write_chunks, chunks_dir, keep)
            info.update(
                files=len(keep),
                bytes=sum(c.bytes for c in chunk_infos),
                chunks=len(chunk_infos),
                listed_files=listing.summary.files,
                unchanged_skipped=skipped,
            )
            self.log.info("incremental run", new_or_changed=len(keep), unchanged=skipped)
        return info, chunk_infos

    def _listing_info(self, listing: ListResult) -> dict[str, Any]:
        """What the job row keeps of a listing (its `listing` column)."""
        self.log.info(
            "listing done",
            files=listing.summary.files,
            bytes=listing.summary.bytes,
            chunks=len(listing.chunks),
        )
        return {
            "files": listing.summary.files,
            "bytes": listing.summary.bytes if listing.sizes else None,
            "directories": listing.summary.directories,
            "errors": listing.summary.errors,
            "elapsed_ms": listing.summary.elapsed_ms,
            "chunks": len(listing.chunks),
            "root": listing.summary.root,
            "error_examples": [
                {"path": e.path, "kind": e.kind, "message": e.message} for e in listing.errors[:10]
            ],
        }

    async def _remember_lineage(self, job: Job) -> None:
        """After a completed incremental run: its files join the lineage's manifest."""
        if job.incremental == "off" or not job.lineage or job.listing is None:
            return
        state_dir, lineage, mode = self.settings.state_dir, job.lineage, job.incremental
        root = Path(str(job.listing.get("root") or job.source))
        rows = await chunks.load(self.db, self.job_id)

        def update() -> None:
            processed = [e for r in rows for e in incremental.read_chunk(r.uri)]
            failed = incremental.failed_keys(self.workspace)
            manifest = incremental.load_manifest(state_dir, lineage)
            new = incremental.updated_manifest(manifest, processed, failed, root, mode)
            incremental.save_manifest(state_dir, lineage, new)

        try:
            await asyncio.to_thread(update)
        except (OSError, ValueError) as exc:
            self.log.warning("could not update the lineage manifest", error=str(exc))

    async def _run_step(
        self,
        job: Job,
        *,
        step: int,
        task: str,
        options: dict[str, Any],
        source: str,
        filters: JobFilters,
        destination: str,
    ) -> None:
        """Plan (or resume) one step and run its unfinished chunks on the engines."""
        state = self.state
        if self._streams(job, step, source):
            spec = self._spec(job, task, options, destination)
            await self._list_and_run(job, source, filters, spec, task)
            self._collect(await chunks.load(self.db, self.job_id, step))
            return
        info, rows = await self._plan(job, step, source, filters, task)
        state.listing = {k: v for k, v in info.items() if k != "root"}
        state.files_total = info.get("files")
        state.bytes_total = info.get("bytes")
        state.work_items = len(rows)
        results_dir = self.workspace / RESULTS_DIR_NAME
        # Created only now: a job that failed before processing has no results.
        results_dir.mkdir(parents=True, exist_ok=True)
        todo = [r for r in rows if r.status == "pending"]
        for row in todo:  # a redone chunk replaces its partial outputs
            chunks.remove_parts(results_dir, chunks.work_id(row.idx, step))
        state.base = chunks.totals_of(rows)
        self._sum_progress()
        spec = self._spec(job, task, options, destination)
        root = str(info.get("root") or source)
        work = [
            engine_pool.ChunkTask(
                ChunkWork(id=chunks.work_id(r.idx, step), uri=r.uri, root=root),
                attempts=r.attempts,
            )
            for r in todo
        ]
        engines = await engine_pool.resolve_engines(self.engine_urls)
        await engine_pool.run_chunks(
            engines,
            work,
            spec,
            on_progress=self._chunk_progress,
            on_outcome=self._chunk_finished,
            on_requeue=self._chunk_requeued,
            window=self.settings.engine_window,
            chunk_max_attempts=self.settings.chunk_max_attempts,
            connect=lambda url: EngineClient.from_settings(url, self.settings),
            capabilities=self.capabilities,
        )
        self._collect(await chunks.load(self.db, self.job_id, step))

    def _spec(
        self, job: Job, task: str, options: dict[str, Any], destination: str
    ) -> engine_pool.ProcessSpec:
        interval_ms = max(50, min(250, int(self.settings.progress_persist_interval * 500)))
        return engine_pool.ProcessSpec(
            task=task,
            options=options,
            results_dir=str(self.workspace / RESULTS_DIR_NAME),
            destination=destination,
            job_id=job.id,
            progress_interval_ms=interval_ms,
            encryption=self._encryption(job, destination),
        )

    def _streams(self, job: Job, step: int, source: str) -> bool:
        """Whether this step's chunks may be processed while the listing goes on.

        Only a first listing of a local folder: a resumed job has its chunks
        already, a retry of failed files or an incremental run must see the
        whole listing before it knows its chunks. The source must be spelled
        as the engine reports its root (it names the root of every chunk
        before the listing ends), and the job's workspace must lie outside
        it, so the walk cannot meet the results being written. (Destinations
        inside the source are refused when the job is created.)
        """
        if step != 1 or job.listing is not None or job.retry_of is not None:
            return False
        if job.incremental != "off" and job.lineage:
            return False
        if "://" in source or not os.path.isabs(source):
            return False
        if os.path.realpath(source) != source:
            return False
        workspace = os.path.realpath(self.workspace)
        return not (workspace == source or workspace.startswith(source.rstrip("/") + "/"))

    async def _list_and_run(
        self,
        job: Job,
        source: str,
        filters: JobFilters,
        spec: engine_pool.ProcessSpec,
        task: str,
    ) -> None:
        """Step 1 of a fresh job: process each chunk as soon as the listing wrote it.

        Checkpoints keep their meaning: the chunk rows and the job's listing
        are still stored together, once the listing is whole (the engine has
        synced the chunk files by then). A chunk that finishes earlier is
        held in memory and recorded right after; if the run dies before the
        listing was stored, the job has no listing and its retry lists and
        processes everything again, as it would have before any chunk ran.
        """
        state = self.state
        chunks_dir = self._fresh_chunks_dir(1)
        results_dir = self.workspace / RESULTS_DIR_NAME
        results_dir.mkdir(parents=True, exist_ok=True)
        state.base = chunks.Totals()
        self._sum_progress()
        arrived: asyncio.Queue[ChunkInfo | None] = asyncio.Queue()
        recorded = False
        held: list[engine_pool.ChunkOutcome] = []
        held_requeues: list[tuple[str, str, str]] = []

        async def on_outcome(outcome: engine_pool.ChunkOutcome) -> None:
            if recorded:
                await self._chunk_finished(outcome)
                return
            held.append(outcome)
            if outcome.totals is not None:  # counted as in flight until stored
                state.in_flight[outcome.work_id] = outcome.totals
            self._sum_progress()

        async def on_requeue(work: str, engine: str, reason: str) -> None:
            if recorded:
                await self._chunk_requeued(work, engine, reason)
                return
            state.in_flight.pop(work, None)
            self._sum_progress()
            held_requeues.append((work, engine, reason))

        async def listed_chunks() -> AsyncIterator[engine_pool.ChunkTask]:
            nonlocal recorded
            listing = asyncio.create_task(
                self._list(source, chunks_dir, filters, arrived.put_nowait, task=task)
            )
            listing.add_done_callback(lambda _: arrived.put_nowait(None))
            try:
                while (chunk := await arrived.get()) is not None:
                    work = ChunkWork(id=chunks.work_id(chunk.index, 1), uri=chunk.uri, root=source)
                    yield engine_pool.ChunkTask(work)
                result = await listing
            finally:
                if not listing.done():
                    listing.cancel()
                    with contextlib.suppress(BaseException):
                        await listing
            info = self._listing_info(result)
            if info["root"] != source:
                self.log.warning("the engine names the source differently", root=info["root"])
            try:
                rows = await chunks.record_listing(
                    self.db, self.job_id, info, list(result.chunks), worker_id=self.worker_id
                )
            except PermissionError:
                self.state.stopped = "lost"
                raise asyncio.CancelledError() from None
            state.listing = {k: v for k, v in info.items() if k != "root"}
            state.files_total = info.get("files")
            state.bytes_total = info.get("bytes")
            state.work_items = len(rows)
            recorded = True
            for outcome in held:
                await self._chunk_finished(outcome)
            for requeue in held_requeues:
                await self._chunk_requeued(*requeue)

        engines = await engine_pool.resolve_engines(self.engine_urls)
        try:
            await self._run_listed(engines, listed_chunks(), spec, on_outcome, on_requeue)
        except BaseException:
            if not recorded:  # nothing was checkpointed: no part file may stay either
                await asyncio.to_thread(shutil.rmtree, results_dir, True)
            raise

    async def _run_listed(
        self,
        engines: list[str],
        work: AsyncIterator[engine_pool.ChunkTask],
        spec: engine_pool.ProcessSpec,
        on_outcome: Callable[[engine_pool.ChunkOutcome], Awaitable[None]],
        on_requeue: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        await engine_pool.run_chunks(
            engines,
            work,
            spec,
            on_progress=self._chunk_progress,
            on_outcome=on_outcome,
            on_requeue=on_requeue,
            window=self.settings.engine_window,
            chunk_max_attempts=self.settings.chunk_max_attempts,
            connect=lambda url: EngineClient.from_settings(url, self.settings),
            capabilities=self.capabilities,
        )

    def _encryption(self, job: Job, destination: str) -> tuple[str, str] | None:
        """Server-side encryption for an s3:// destination: the job's, else the settings'."""
        s = self.settings
        if not destination.startswith("s3://"):
            return None
        if job.encryption:
            return (job.encryption.get("mode", ""), job.encryption.get("kms_key_id", ""))
        if not (s.s3_sse or s.s3_sse_kms_key_id):
            return None
        return (s.s3_sse, s.s3_sse_kms_key_id)

    def _collect(self, rows: list[Any]) -> None:
        """Parts, summary and item errors of a step from its chunk rows."""
        state = self.state
        state.parts = chunks.parts_of(rows)
        state.summary = merge_summaries(r.summary for r in rows if r.status == "done")
        state.chunks_done = dict(Counter(r.step for r in rows if r.status == "done"))
        state.item_errors = [
            f"{chunks.work_id(r.idx, r.step)}: {r.error}" for r in rows if r.status == "failed"
        ]
        state.base = chunks.totals_of(rows)
        state.in_flight.clear()
        self._sum_progress()

    def _sum_progress(self) -> None:
        s = self.state
        s.files_done = s.base.files_done + sum(p.files_done for p in s.in_flight.values())
        s.files_failed = s.base.files_failed + sum(p.files_failed for p in s.in_flight.values())
        s.bytes_done = s.base.bytes_done + sum(p.bytes_done for p in s.in_flight.values())
        s.bytes_failed = s.base.bytes_failed + sum(p.bytes_failed for p in s.in_flight.values())

    def _chunk_progress(self, work: str, _engine: str, event: ProgressEvent) -> None:
        self.state.in_flight[work] = event
        self._sum_progress()

    async def _chunk_finished(self, outcome: engine_pool.ChunkOutcome) -> None:
        row = await chunks.mark_finished(self.db, self.job_id, outcome)
        s = self.state
        s.in_flight.pop(outcome.work_id, None)
        if row is not None:
            s.base.files_done += row.files_done
            s.base.files_failed += row.files_failed
            s.base.bytes_done += row.bytes_done
            s.base.bytes_failed += row.bytes_failed
        self._sum_progress()

    async def _chunk_requeued(self, work: str, engine: str, reason: str) -> None:
        self.state.in_flight.pop(work, None)
        self._sum_progress()
        await chunks.note_requeue(self.db, self.job_id, work, engine, reason)

    # ------------------------------------------------------------- records

    def _store_name(self) -> str:
        """Where this run's state lives, as a user would look for it."""
        if self.settings.is_sqlite:
            return f"the job store in {str(self.settings.state_dir)!r}"
        return "the job store's database"

    def _copy_counters(self, job: Job) -> None:
        s = self.state
        job.files_total = s.files_total
        job.bytes_total = s.bytes_total
        job.files_done = s.files_done
        job.files_failed = s.files_failed
        job.bytes_done = s.bytes_done
        job.bytes_failed = s.bytes_failed

    async def _persist_progress(self) -> str | None:
        """Write counters and heartbeat; say why to stop: "cancel", "lost" or None.

        "lost": the job is no longer ours (its lease expired and another
        worker requeued or took it); we stop without writing anything more.
        """
        try:
            async with self.db.session() as session:
                job = await session.get(Job, self.job_id, populate_existing=True)
                if job is None:  # deleted under us: stop
                    return "cancel"
                if not self._still_ours(job):
                    return "lost"
                self._copy_counters(job)
                now = utcnow()
                job.updated_at = now
                job.heartbeat_at = now
                session.add(job)
                await session.commit()
                await session.refresh(job)
        except Exception as exc:  # a busy DB must not kill the run; try again next tick
            if str(exc) != self._persist_error:
                self._persist_error = str(exc)
                self.log.warning(
                    "could not persist progress; trying again every tick", error=str(exc)
                )
            return None
        if self._persist_error is not None:
            self._persist_error = None
            self.log.info("progress persisted again")
        self._notify(job)
        return "cancel" if job.cancel_requested else None

    def _still_ours(self, job: Job) -> bool:
        if job.status != JobStatus.running.value:
            return False
        return self.worker_id is None or job.worker_id == self.worker_id

    async def _remove_partial_outputs(self) -> None:
        """Part files of chunks that did not finish (cancel, timeout): removed.

        Finished chunks keep theirs. The engine writes each part atomically, so
        what is removed here is whole parts of chunks cut short.
        """
        results_dir = self.workspace / RESULTS_DIR_NAME
        with contextlib.suppress(Exception):
            for row in await chunks.load(self.db, self.job_id, step=None):
                if row.status == "pending":
                    chunks.remove_parts(results_dir, chunks.work_id(row.idx, row.step))
        self.state.in_flight.clear()

    async def _finish(self, drive: asyncio.Task[None], job_at_start: Job) -> Job:
        """Settle the row after the drive ended: completed, failed, cancelled or retried.

        Permanent errors (bad input: source gone, bad options, a chunk that
        cannot be read) fail the job at once; anything else (an engine or the
        database away) puts it back to `pending` with an exponential backoff
        while it has attempts left.
        """
        status = JobStatus.completed
        error: str | None = None
        retry = False
        stopped = self.state.stopped
        try:
            await drive
        except asyncio.CancelledError:
            status, error = JobStatus.cancelled, "cancelled by request"
        except (NotFoundError, InvalidRequestError) as exc:
            status, error = JobStatus.failed, str(exc)
        except PravahError as exc:
            status, error, retry = JobStatus.failed, str(exc), True
        except Exception as exc:
            full = store_full(exc)
            if full is None:
                self.log.exception("job run crashed")
                error = f"internal error: {type(exc).__name__}: {exc}"
            else:
                self.log.error("job store full", error=str(exc))
                error = f"{self._store_name()} is full ({full}); free space there"
            status, retry = JobStatus.failed, True
        stopped = self.state.stopped or stopped
        if stopped == "lost":
            return await self._lost()
        if stopped == "timeout":
            timeout = job_at_start.timeout_seconds or self.settings.job_timeout
            status, retry = JobStatus.failed, False
            error = f"the job timed out after {timeout:g} s"
        elif stopped == "cancel":
            status, error, retry = JobStatus.cancelled, "cancelled by request", False
        if status != JobStatus.completed:
            await self._remove_partial_outputs()
        with contextlib.suppress(Exception):
            self._collect(await chunks.load(self.db, self.job_id, step=None))
        if status == JobStatus.completed and self.state.item_errors:
            status = JobStatus.failed
            first = self.state.item_errors[0]
            error = (
                f"{len(self.state.item_errors)} of {self.state.work_items} work items "
                f"could not be processed; first: {first}"
            )
        ratio = max_error_ratio_of(job_at_start)
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
        summary = dict(self.state.summary) if self.state.summary is not None else None
        if summary is not None and self.state.listing:
            summary.setdefault("listing", self.state.listing)
        if summary is not None and len(s.step_summaries) > 1:
            summary["steps"] = s.step_summaries
        if summary is not None and s.files_failed and self.state.parts:
            summary["failures"] = self._first_failures()
        steps = steps_of(job_at_start)
        if (
            summary is not None
            and steps[-1].task == "hash"
            and s.chunks_done.get(len(steps), 0) > 1
        ):
            # Each chunk's summary grouped only its own files.
            parts, workspace = self.state.parts, self.workspace
            with contextlib.suppress(OSError, ValueError):
                summary = await asyncio.to_thread(
                    duplicates.regroup, summary, lambda: iter_jsonl(parts, workspace)
                )

        async def write() -> Job | None:
            async with self.db.session() as session:
                job = await session.get(
                    Job, self.job_id, populate_existing=True, with_for_update=True
                )
                if job is None:
                    raise NotFoundError(f"job {self.job_id} vanished while it ran")
                if not self._still_ours(job):
                    await session.rollback()
                    return None
                self._copy_counters(job)
                now = utcnow()
                limit = job.max_attempts or self.settings.max_attempts
                if retry and job.attempts < limit and not job.cancel_requested:
                    delay = queue.backoff_seconds(
                        job.attempts, self.settings.retry_backoff, self.settings.retry_backoff_max
                    )
                    job.status = JobStatus.pending.value
                    job.worker_id = None
                    job.run_after = now + timedelta(seconds=delay)
                    job.error = f"attempt {job.attempts} of {limit} failed: {error}; retrying"
                    outcome = "retry"
                else:
                    job.status = status.value
                    tries = f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"
                    job.error = f"{error} (after {tries})" if retry else error
                    job.summary = summary
                    job.results_available = results_available
                    job.finished_at = now
                    outcome = status.value
                job.updated_at = now
                session.add(job)
                if self.worker_id is not None:
                    await queue.release_claim(
                        session, self.job_id, self.worker_id, outcome, commit=False
                    )
                await session.commit()
                await session.refresh(job)
            return job

        final = await retrying(write)
        if final is None:
            return await self._lost()
        job = final
        if job.status == JobStatus.pending.value:
            # Intermediate outputs of a pipeline stay for the retry to resume from.
            self.log.warning("job attempt failed; retry queued", error=error, at=job.run_after)
            self._notify(job)
            return job
        # Intermediate outputs of a pipeline are scratch once the job has ended.
        await asyncio.to_thread(shutil.rmtree, self.workspace / "steps", True)
        if job.status == JobStatus.completed.value:
            await self._remember_lineage(job)
        metrics.job_ended(job.task, job.status, job.started_at, job.finished_at)
        self.log.info(
            "job finished",
            status=job.status,
            files_done=job.files_done,
            files_failed=job.files_failed,
            error=error,
        )
        self._notify(job)
        return job

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

    async def _lost(self) -> Job:
        """The lease was taken away: leave the row to its new holder."""
        self.log.warning("the job's lease was lost; another worker owns it now")
        async with self.db.session() as session:
            if self.worker_id is not None:
                with contextlib.suppress(Exception):
                    await queue.release_claim(session, self.job_id, self.worker_id, "lost_lease")
            job = await session.get(Job, self.job_id, populate_existing=True)
        if job is None:
            raise NotFoundError(f"job {self.job_id} vanished while it ran")
        return job

    async def _release(self) -> None:
        """Settle a job whose run was stopped from outside: cancelled or requeued."""
        with contextlib.suppress(Exception):
            async with self.db.session() as session:
                job = await session.get(Job, self.job_id, populate_existing=True)
                if job is None or not self._still_ours(job):
                    return
                now = utcnow()
                job.updated_at = now
                if job.cancel_requested:
                    await self._remove_partial_outputs()
                    self._copy_counters(job)
                    job.status = JobStatus.cancelled.value
                    job.finished_at = now
                    job.error = job.error or "cancelled by request"
                    metrics.job_ended(job.task, job.status, job.started_at, now)
                else:
                    job.status = JobStatus.pending.value
                    job.worker_id = None
                session.add(job)
                if self.worker_id is not None:
                    await queue.release_claim(
                        session,
                        self.job_id,
                        self.worker_id,
                        "cancelled" if job.cancel_requested else "shutdown",
                        commit=False,
                    )
                await session.commit()
                self.log.info("job settled after an outside stop", status=job.status)

    def _notify(self, job: Job) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(JobPublic.from_job(job))
        except Exception:  # a broken display must not stop the job
            self.log.exception("on_progress callback failed")
