"""`pravah run`: the embedded default, a whole job in one process.

Why in-process rather than a local server: with no configuration at all a
person gets a job store (SQLite in the state folder, migrated on start), an
engine child process on a free port that lives exactly as long as the
command, and the same validation and runner the API uses -- `create_job` and
`run_job` are called directly, so there is no second implementation of
either.

Shutdown (the subtle part). SIGINT is taken over by a loop signal handler
once the job exists. Ctrl-C sets ``cancel_requested`` on the row (as the
API's cancel does), then cancels the runner task at once rather than waiting
for the runner's next progress tick: a person pressing Ctrl-C wants it to
stop now. Cancelling the runner cancels its gRPC call, which stops the
engine's work, and the runner, seeing the flag, ends the row ``cancelled``
with the counts reached so far. The engine child is
stopped by its context manager on the way out and the exit status is 130.
A Ctrl-C before the job exists simply unwinds (engine stopped) with 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pravah.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CliFailure,
    configure_cli_logging,
    err_console,
    handle_errors,
    load_settings,
    out_console,
)
from pravah.cli.options import build_job_request, check_output_file
from pravah.cli.output import is_stdout, not_written, write_jsonl
from pravah.cli.params import (
    Destination,
    DryRun,
    Exclude,
    Extension,
    FollowSymlinks,
    Hidden,
    Include,
    JsonOutput,
    MaxDepth,
    MaxErrorRatio,
    MaxSize,
    MinSize,
    NewerThan,
    OlderThan,
    OutputFile,
    PipelineFile,
    Quiet,
    Source,
    Sse,
    SseKmsKeyId,
    Task,
    TaskOption,
)
from pravah.cli.render import MAX_ERRORS_SHOWN, JobProgress, dump_json, render_summary
from pravah.cli.visible import visible

if TYPE_CHECKING:
    from pravah.db import Database
    from pravah.engine_client import Capabilities
    from pravah.engine_launcher import LocalEngine
    from pravah.models import Job, JobPublic
    from pravah.settings import Settings

__all__ = ["RunOutcome", "run_command", "run_embedded"]


@dataclass
class RunOutcome:
    """What the command prints: the final job, a few failed lines, the results written."""

    job: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)
    lines_written: int | None = None
    interrupted: bool = False
    # Why --output could not be written after the job, if it could not.
    output_error: str | None = None


def result_lines(workspace: Path) -> Iterator[bytes]:
    """The job's per-file result lines, byte for byte as GET /jobs/{id}/results?format=jsonl."""
    from pravah.results import iter_jsonl, load_parts

    yield from iter_jsonl(load_parts(workspace) or [], workspace)


def first_errors(lines: Iterable[bytes], limit: int = MAX_ERRORS_SHOWN) -> list[dict[str, Any]]:
    """The first ``limit`` failed result lines (a cheap byte test skips the others)."""
    found: list[dict[str, Any]] = []
    for raw in lines:
        if b'"error"' not in raw:
            continue
        line = json.loads(raw)
        if isinstance(line, dict) and line.get("error"):
            found.append(line)
            if len(found) >= limit:
                break
    return found


@asynccontextmanager
async def _engine(settings: Settings, engine_url: str | None) -> AsyncIterator[str]:
    """The engine to use: ``--engine``, else PRAVAH_ENGINE_URLS, else a child process."""
    url = engine_url or (settings.engine_urls[0] if settings.engine_urls else None)
    if url:
        yield url
        return
    from pravah.engine_launcher import LocalEngine

    async with LocalEngine.from_settings(settings) as local_url:
        yield local_url


class _EarlyEngine:
    """The engine of one `pravah run`, spawned before the heavy imports; see run_embedded.

    A failure to start it is raised by address(), i.e. after the request was
    validated: a bad request still says so first.
    """

    def __init__(self, settings: Settings, engine_url: str | None) -> None:
        self._url = engine_url or (settings.engine_urls[0] if settings.engine_urls else None)
        self._local: LocalEngine | None = None
        self._failure: Exception | None = None
        self._settings = settings

    async def spawn(self) -> None:
        if self._url:
            return
        from pravah.engine_launcher import LocalEngine
        from pravah.errors import PravahError

        try:
            self._local = LocalEngine.from_settings(self._settings)
            await self._local.spawn()
        except PravahError as exc:
            self._local, self._failure = None, exc

    async def address(self) -> str:
        if self._failure is not None:
            raise self._failure
        if self._local is not None:
            return await self._local.ready()
        assert self._url is not None
        return self._url

    async def stop(self) -> None:
        if self._local is not None:
            await self._local.stop()


async def _run_with_sigint(
    db: Database,
    job: Job,
    settings: Settings,
    url: str,
    on_progress: Callable[[JobPublic], None],
    capabilities: Capabilities,
) -> Job | None:
    """Runs the job; returns its final row, or None when it was interrupted
    (SIGINT, SIGTERM or SIGHUP)."""
    from pravah.runner import run_job

    loop = asyncio.get_running_loop()
    run_task = asyncio.ensure_future(
        run_job(job.id, settings, url, on_progress, db=db, capabilities={url: capabilities})
    )
    interrupted = asyncio.Event()
    # Ctrl-C, `kill`, `timeout`, systemd and a closed terminal all mean stop:
    # the job is cancelled and the engine stopped, not left running.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for stop in stops:
        loop.add_signal_handler(stop, interrupted.set)
    try:
        waiter = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({run_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if run_task.done() and not interrupted.is_set():
            return run_task.result()  # re-raises the runner's own failure, if any
        # The flag first: whoever looks at the row from now on (this runner,
        # or a server worker sharing the store) sees a job being cancelled.
        await _request_cancel(db, job.id)
        run_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run_task
        return None
    finally:
        for stop in stops:
            loop.remove_signal_handler(stop)
        if not run_task.done():
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run_task


async def run_embedded(
    request: dict[str, Any],
    settings: Settings,
    *,
    engine_url: str | None,
    progress: JobProgress,
    output: Path | None,
    want_errors: bool,
) -> RunOutcome:
    """Validates, stores and runs one job in this process; see the module doc.

    Start-up order (what a one-file run waits for): the engine child is
    spawned first, then the job store and gRPC are imported, the request
    validated and the store migrated while the engine starts; its
    capabilities are asked once and serve both the job's validation and the
    runner (its window), and the runner shares this function's database.
    """
    engine = _EarlyEngine(settings, engine_url)
    await engine.spawn()
    db: Database | None = None
    pruning: asyncio.Task[None] | None = None
    try:
        from pravah.db import Database, migrate
        from pravah.engine_client import EngineClient
        from pravah.jobs import create_job
        from pravah.models import JobCreate, JobPublic
        from pravah.runner import workspace_of

        data = JobCreate.model_validate(request)  # same model, same errors as POST /jobs
        if data.max_attempts is None:
            # No worker is left to retry it once this command exits: one
            # attempt, and its real outcome, not "pending ... retrying".
            data = data.model_copy(update={"max_attempts": 1})
        db = Database(settings)
        await migrate(settings, db=db)
        url = await engine.address()
        async with EngineClient.from_settings(url, settings) as client:
            capabilities = await client.capabilities()
        async with db.session() as session:
            job = await create_job(session, data, capabilities, settings=settings)
        # While the engine works: a nightly cron line is the usual way old
        # jobs pile up in this state folder, and nothing else sweeps it.
        pruning = asyncio.create_task(_prune_results(db, settings))

        def on_progress(public: JobPublic) -> None:
            progress.update(public.model_dump(mode="json"))

        with progress:
            progress.update(JobPublic.from_job(job).model_dump(mode="json"))
            ended = await _run_with_sigint(db, job, settings, url, on_progress, capabilities)
            # After an interrupt the row is read again: the runner settled it.
            final = JobPublic.from_job(ended) if ended is not None else await _public(db, job.id)
            progress.update(final.model_dump(mode="json"))
        await pruning
    finally:
        if pruning is not None and not pruning.done():  # the run was cut short
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
        # Both wait on something outside this process (SQLite's checkpoint of
        # the WAL when its last connection closes, the engine's exit).
        stopped = await asyncio.gather(
            db.dispose() if db is not None else asyncio.sleep(0),
            engine.stop(),
            return_exceptions=True,
        )
        errors = [r for r in stopped if isinstance(r, BaseException)]
    if errors:  # only reached when the run itself raised nothing
        raise errors[0]
    interrupted = ended is None
    outcome = RunOutcome(job=final.model_dump(mode="json"), interrupted=interrupted)
    if interrupted:
        return outcome
    workspace = workspace_of(settings, job.id)
    if output is not None:
        try:
            outcome.lines_written = write_jsonl(output, result_lines(workspace))
        except OSError as exc:  # checked before the job; the disk may still fill up
            outcome.output_error = (
                f"{not_written(output, exc)}; the job's per-file results stay in {str(workspace)!r}"
            )
    if want_errors and final.progress.files_failed:
        outcome.errors = first_errors(result_lines(workspace))
    return outcome


async def _prune_results(db: Database, settings: Settings) -> None:
    """Expires old jobs' results (pravah.retention); a failure only warns."""
    from pravah.log import get_logger
    from pravah.models import utcnow
    from pravah.retention import prune_results

    try:
        async with db.session() as session:
            await prune_results(session, settings, utcnow())
    except Exception as exc:  # the run's own outcome matters more
        get_logger(__name__).warning("could not remove expired job results", error=str(exc))


async def _public(db: Database, job_id: str) -> JobPublic:
    from pravah.jobs import get_job
    from pravah.models import JobPublic

    async with db.session() as session:
        return JobPublic.from_job(await get_job(session, job_id))


async def _request_cancel(db: Database, job_id: str) -> None:
    from pravah.errors import ConflictError
    from pravah.jobs import request_cancel

    async with db.session() as session:
        with contextlib.suppress(ConflictError):
            await request_cancel(session, job_id)


DRY_RUN_EXAMPLES = 20


def _chunk_examples(path: Path) -> list[dict[str, Any]]:
    """The first entries of a listing chunk, as {path, size}."""
    examples: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for raw in fh:
            entry = json.loads(raw)
            examples.append({"path": entry.get("p"), "size": entry.get("s")})
            if len(examples) >= DRY_RUN_EXAMPLES:
                break
    return examples


async def dry_run(
    request: dict[str, Any], settings: Settings, *, engine_url: str | None
) -> dict[str, Any]:
    """What a job would process: validated as for a real run, listed, nothing stored or changed."""
    import tempfile

    from pravah.engine_client import EngineClient
    from pravah.jobs import resolve_request_source
    from pravah.models import JobCreate
    from pravah.pipeline import validate_steps

    data = JobCreate.model_validate(request)
    source = resolve_request_source(data, settings)
    async with (
        _engine(settings, engine_url) as url,
        EngineClient.from_settings(url, settings) as client,
    ):
        steps = validate_steps(data, await client.capabilities(), data.destination)
        with tempfile.TemporaryDirectory(prefix="pravah-dry-run-") as tmp:
            listing = await client.list_to_chunks(str(source), tmp, data.filters)
            examples: list[dict[str, Any]] = []
            if listing.chunks:
                first = Path(listing.chunks[0].uri.removeprefix("file://"))
                examples = await asyncio.to_thread(_chunk_examples, first)
    return {
        "dry_run": True,
        "source": str(source),
        "steps": [s.model_dump() for s in steps],
        "destination": data.destination,
        "files": listing.summary.files,
        "bytes": listing.summary.bytes,
        "directories": listing.summary.directories,
        "errors": listing.summary.errors,
        "examples": examples,
    }


def _render_dry_run(plan: dict[str, Any]) -> None:
    steps = " -> ".join(s["task"] for s in plan["steps"])
    out_console.print(
        f"dry run: {steps} would process {plan['files']:,} files "
        f"({plan['bytes']:,} bytes) under {visible(plan['source'])}; nothing was changed"
    )
    for example in plan["examples"]:
        out_console.print(f"  {visible(example['path'])}  {example['size'] or 0:,} bytes")
    if plan["files"] > len(plan["examples"]):
        out_console.print(f"  ... and {plan['files'] - len(plan['examples']):,} more")


def run_command(
    source: Source,
    task: Task = None,
    option: TaskOption = None,
    include: Include = None,
    exclude: Exclude = None,
    ext: Extension = None,
    min_size: MinSize = None,
    max_size: MaxSize = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    max_depth: MaxDepth = None,
    hidden: Hidden = False,
    follow_symlinks: FollowSymlinks = False,
    dest: Destination = None,
    output: OutputFile = None,
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            metavar="URL",
            help="Use this running engine (host:port) instead of starting one "
            "(default: first of PRAVAH_ENGINE_URLS, else a child process).",
            show_default=False,
        ),
    ] = None,
    pipeline: PipelineFile = None,
    max_error_ratio: MaxErrorRatio = None,
    sse: Sse = None,
    sse_kms_key_id: SseKmsKeyId = None,
    dry: DryRun = False,
) -> None:
    """Run a job here and now: local job store, engine child process, progress, summary.

    Exit status: 0 when the job completed (per-file errors are counted, not
    fatal), 1 when it failed or was cancelled, 2 on bad input, 130 on Ctrl-C.
    """
    with handle_errors():
        request = build_job_request(
            source=source,
            task=task or [],
            options=option or [],
            include=include or [],
            exclude=exclude or [],
            extensions=ext or [],
            min_size=min_size,
            max_size=max_size,
            older_than=older_than,
            newer_than=newer_than,
            max_depth=max_depth,
            hidden=hidden,
            follow_symlinks=follow_symlinks,
            destination=dest,
            pipeline_file=pipeline,
            max_error_ratio=max_error_ratio,
            sse=sse,
            sse_kms_key_id=sse_kms_key_id,
        )
        if not dry:
            check_output_file(output, json_output=json_output)
        settings = load_settings()
        configure_cli_logging(settings)
        from pravah import metrics

        metrics.disable()  # this process serves no /metrics and ends with the job
        if dry:
            plan = asyncio.run(dry_run(request, settings, engine_url=engine))
            if json_output:
                dump_json(plan)
            else:
                _render_dry_run(plan)
            return
        progress = JobProgress(enabled=not (quiet or json_output))
        outcome = asyncio.run(
            run_embedded(
                request,
                settings,
                engine_url=engine,
                progress=progress,
                output=output,
                want_errors=not json_output,
            )
        )
        job = outcome.job
        if json_output:
            dump_json(job)
        elif is_stdout(output):  # standard output holds the result lines
            render_summary(err_console, job, outcome.errors)
        else:
            render_summary(out_console, job, outcome.errors)
            if outcome.lines_written is not None and not quiet:
                err_console.print(f"wrote {outcome.lines_written:,} result lines to {output}")
        if outcome.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)
        if outcome.output_error is not None:
            raise CliFailure(outcome.output_error)
        if job.get("status") != "completed":
            raise typer.Exit(EXIT_FAILED)
