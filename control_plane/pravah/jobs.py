"""Job service layer shared by the REST API and the CLI.

Why here and not in the routes: validation (task exists, options match the
task's JSON Schema from the engine, source is a readable local directory) and
state changes (cancel) must behave the same from every front end. Validation
happens before anything is stored, so a rejected request leaves no row.
Schedules (pravah.schedules) validate their job request with the same
`check_request` and build each run's row with the same `new_job`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah import metrics, queue, sandbox, telemetry, uploads
from pravah.engine_client import Capabilities, TaskInfo
from pravah.errors import ConflictError, GoneError, InvalidRequestError, NotFoundError
from pravah.models import TERMINAL_STATUSES, Job, JobCreate, JobStatus, utcnow
from pravah.retention import removed
from pravah.settings import Settings


def resolve_source(
    source: str, roots: list[Path] | None = None, buckets: list[str] | None = None
) -> Path | str:
    """The absolute local directory, or normalized s3:// URI, a source names.

    Accepts a path or a file:// URI (percent-encoding undone). With `roots`,
    the resolved path (after following "..", and symlinks) must lie inside
    one of them. s3:// URIs must name a bucket in `buckets`; whether the
    prefix exists is the engine's to find out when it lists it.
    InvalidRequestError if unusable.
    """
    text = sandbox.check_text(source, "source")
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme == "s3":
            return sandbox.s3_uri(text, buckets or [], "source")
        if parsed.scheme != "file":
            raise InvalidRequestError(
                f"source {source!r} uses the {parsed.scheme}:// scheme, which is not supported; "
                "give a local directory path, a file:// URI or an s3:// URI"
            )
    resolved = sandbox.local_path(text, "source")
    sandbox.check_inside(resolved, roots or [], source, "source")
    if not resolved.exists():
        raise InvalidRequestError(
            f"source {source!r} does not exist (resolved to {str(resolved)!r})"
        )
    if not resolved.is_dir():
        raise InvalidRequestError(
            f"source {source!r} is not a directory (resolved to {str(resolved)!r}); "
            "give the folder that contains the files"
        )
    return resolved


def resolve_request_source(
    data: JobCreate, settings: Settings | None, owner_filter: str | None = None
) -> Path | str:
    """The request's source checked against the settings' roots and buckets.

    With `owner_filter` (a non-admin caller), a source inside the uploads
    folder must be one of that owner's uploads (pravah.uploads.check_owner).
    """
    roots = sandbox.source_roots(settings) if settings else []
    buckets = settings.allowed_buckets if settings else []
    if settings is not None:
        uploads.check_owner(data.source, settings.uploads_dir, owner_filter, "source")
    try:
        return resolve_source(data.source, roots, buckets)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, field="source") from exc


def check_paths(
    data: JobCreate, settings: Settings | None, owner_filter: str | None = None
) -> tuple[Path | str, str | None]:
    """The request's resolved source and the destination to store, both allowed."""
    source = resolve_request_source(data, settings, owner_filter)
    if isinstance(source, str) and data.incremental != "off":
        raise InvalidRequestError(
            "incremental runs need a local source (S3 sources are listed whole)",
            field="incremental",
        )
    if data.encryption is not None and not (data.destination or "").startswith("s3://"):
        raise InvalidRequestError(
            "'encryption' applies to objects written to an s3:// destination; "
            "give one or drop 'encryption'",
            field="encryption",
        )
    destination = data.destination
    if settings is not None:
        uploads.check_owner(destination, settings.uploads_dir, owner_filter, "destination")
        destination = sandbox.check_destination(data.destination, source, settings)
    return source, destination


def check_request(
    data: JobCreate,
    capabilities: Capabilities,
    settings: Settings | None,
    owner_filter: str | None = None,
) -> tuple[Path | str, str | None]:
    """Everything `POST /jobs` checks before storing: tasks, options, lineage, paths.

    Returns the resolved source and the destination to store.
    """
    from pravah.pipeline import validate_steps

    if data.incremental != "off" and not data.lineage:
        raise InvalidRequestError(
            "'incremental' needs a 'lineage' (the name its runs share)", field="lineage"
        )
    validate_steps(data, capabilities, data.destination)
    return check_paths(data, settings, owner_filter)


def new_job(
    data: JobCreate,
    source: Path | str,
    destination: str | None,
    *,
    owner: str | None,
    created_at: datetime | None = None,
) -> Job:
    """The pending row of a checked request (not stored)."""
    from pravah.pipeline import stored_spec

    spec = stored_spec(data, data.steps())
    now = utcnow()
    return Job(
        task=spec.task,
        source=str(source),
        destination=destination,
        options=spec.options,
        filters=data.filters.model_dump(mode="json", exclude_defaults=True),
        status=JobStatus.pending.value,
        created_at=created_at or now,
        updated_at=now,
        trace_context=telemetry.current_trace_context(),
        owner=owner,
        priority=data.priority,
        max_attempts=data.max_attempts,
        timeout_seconds=data.timeout,
        lineage=data.lineage,
        incremental=data.incremental,
        encryption=data.encryption.model_dump() if data.encryption else None,
    )


def get_task(capabilities: Capabilities, name: str) -> TaskInfo:
    """The task named `name`, or InvalidRequestError listing the available ones."""
    task = capabilities.tasks.get(name)
    if task is None:
        available = ", ".join(sorted(capabilities.tasks)) or "(none)"
        raise InvalidRequestError(
            f"unknown task {name!r}; available tasks: {available}", field="task"
        )
    return task


def validate_options(task: TaskInfo, options: dict[str, Any]) -> None:
    """Check options against the task's JSON Schema; the error names the bad option."""
    schema = task.options_schema or {"type": "object"}
    if options == {} and _accepts_empty_object(schema):
        return  # nothing to check, and jsonschema (~20 ms to import) is not needed
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    validator = validator_cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(options))
    if error is None:
        _check_integers(task, schema, options)
        return
    known = sorted((schema.get("properties") or {}).keys())
    known_text = ", ".join(known) if known else "none"
    if error.validator == "additionalProperties" and not error.path:
        extra = sorted(set(options) - set(known))
        names = ", ".join(repr(e) for e in extra) or "?"
        raise InvalidRequestError(
            f"unknown option {names} for task {task.name!r}; known options: {known_text}",
            field="options",
        )
    where = ".".join(str(p) for p in error.absolute_path)
    if where:
        raise InvalidRequestError(
            f"invalid option {where!r} for task {task.name!r}: {error.message}",
            field=f"options.{where}",
        )
    raise InvalidRequestError(
        f"invalid options for task {task.name!r}: {error.message}", field="options"
    )


def _check_integers(task: TaskInfo, schema: dict[str, Any], options: dict[str, Any]) -> None:
    """Integer options as the engine reads them: JSON Schema counts 9.0 as
    an integer and sets no bound on size, but the engine's 64-bit integers
    take neither, and the job failed when it ran rather than here."""
    for name, value in options.items():
        spec = (schema.get("properties") or {}).get(name) or {}
        if spec.get("type") != "integer" or isinstance(value, bool):
            continue
        if isinstance(value, float):
            raise InvalidRequestError(
                f"invalid option {name!r} for task {task.name!r}: {value!r} is not an "
                f"integer; write {int(value)}",
                field=f"options.{name}",
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            raise InvalidRequestError(
                f"invalid option {name!r} for task {task.name!r}: {value} is too large",
                field=f"options.{name}",
            )


# Keywords that cannot reject `{}` in an object schema (they constrain
# properties that are present, or only annotate).
_EMPTY_SAFE_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "$schema",
        "$id",
        "title",
        "description",
        "default",
        "examples",
    }
)


def _accepts_empty_object(schema: Any) -> bool:
    """True when `schema` surely accepts `{}`: an object schema with no rule that a
    missing option could break (`required`, `minProperties`, combinators, ...).
    Anything less plain goes through the full validator."""
    return (
        isinstance(schema, dict)
        and schema.get("type", "object") == "object"
        and set(schema) <= _EMPTY_SAFE_KEYWORDS
    )


async def create_job(
    session: AsyncSession,
    data: JobCreate,
    capabilities: Capabilities,
    *,
    settings: Settings | None = None,
    owner: str | None = None,
    owner_filter: str | None = None,
) -> Job:
    """Validate and store a pending job; nothing is stored when validation fails.

    `settings` supplies the allowed roots and buckets (None: no restriction,
    for tests); `owner` is the creating key's owner (pravah.auth) and
    `owner_filter` the owner whose uploads it may use (None: any).
    """
    source, destination = check_request(data, capabilities, settings, owner_filter)
    job = new_job(data, source, destination, owner=owner)
    session.add(job)
    await session.commit()
    await session.refresh(job)
    await queue.notify(session)
    metrics.job_created(job.task)
    return job


def _valid_id(job_id: str) -> bool:
    try:
        uuid.UUID(job_id)
    except (ValueError, AttributeError):
        return False
    return True


async def get_job(session: AsyncSession, job_id: str, owner: str | None = None) -> Job:
    """The job with this id, or NotFoundError (also for malformed ids).

    With `owner`, another owner's job is NotFoundError too, with the same
    message, so a caller cannot learn that it exists.
    """
    if not _valid_id(job_id):
        raise NotFoundError(f"no job with id {job_id!r} (job ids are UUIDs)")
    job = await session.get(Job, str(uuid.UUID(job_id)), populate_existing=True)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFoundError(f"no job with id {job_id!r}")
    return job


def page_limit(limit: int | None, settings: Settings) -> int:
    """The page size of a jobs list: the default, or `limit` when within the maximum.

    InvalidRequestError above the maximum: a silently shorter page would
    look like the end of the list to a client that pages by `limit`.
    """
    if limit is not None and limit > settings.jobs_max_limit:
        raise InvalidRequestError(
            f"limit {limit} is above the maximum of {settings.jobs_max_limit} jobs per page; "
            "page with offset",
            field="limit",
        )
    return limit or settings.jobs_default_limit


async def list_jobs(
    session: AsyncSession,
    status: JobStatus | None = None,
    limit: int = 50,
    offset: int = 0,
    owner: str | None = None,
) -> tuple[list[Job], int]:
    """One page of jobs, newest first, and the total matching `status` (and `owner`)."""
    stmt = select(Job)
    count = select(func.count()).select_from(Job)
    if owner is not None:
        stmt = stmt.where(col(Job.owner) == owner)
        count = count.where(col(Job.owner) == owner)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
        count = count.where(col(Job.status) == status.value)
    stmt = stmt.order_by(col(Job.created_at).desc(), col(Job.id).desc()).offset(offset).limit(limit)
    items = list((await session.exec(stmt)).all())
    total = int((await session.exec(count)).one())
    return items, total


async def request_cancel(session: AsyncSession, job_id: str, owner: str | None = None) -> Job:
    """Cancel a job: pending ones at once, running ones by flag (the runner stops them).

    Raises ConflictError for jobs that already finished.
    """
    job = await get_job(session, job_id, owner)
    status = JobStatus(job.status)
    now = utcnow()
    if status in TERMINAL_STATUSES:
        raise ConflictError(f"job {job.id} already finished ({status.value}); nothing to cancel")
    job.cancel_requested = True
    job.updated_at = now
    if status == JobStatus.pending:
        job.status = JobStatus.cancelled.value
        job.finished_at = now
        job.error = "cancelled before it started"
    session.add(job)
    await session.commit()
    await session.refresh(job)
    if status == JobStatus.pending:
        metrics.job_ended(job.task, JobStatus.cancelled.value, None, now)
    return job


async def create_retry_job(
    session: AsyncSession,
    job_id: str,
    settings_jobs_dir: Path,
    *,
    owner_filter: str | None = None,
) -> Job:
    """A new job over exactly the files that failed in job `job_id`.

    ConflictError while the job still runs or when none of its files failed.
    `owner_filter` hides other owners' jobs (404) as get_job does. The new
    job belongs to the parent's owner, whoever asked (an admin retrying
    someone's job): it continues their job over their files, so it belongs
    in their list and under their key's allowed roots.
    """
    from pravah.incremental import failed_entries

    parent = await get_job(session, job_id, owner_filter)
    if JobStatus(parent.status) not in TERMINAL_STATUSES:
        raise ConflictError(f"job {parent.id} is still {parent.status}; retry it once it ended")
    if not parent.files_failed:
        raise ConflictError(f"job {parent.id} has no failed files to retry")
    if parent.results_removed_at is not None:
        raise GoneError(f"{removed(parent.id, parent.results_removed_at)}; nothing to retry")
    if not failed_entries(settings_jobs_dir / parent.id):
        raise ConflictError(f"job {parent.id} kept no per-file results; nothing to retry")
    if (open_retry := await _open_retry(session, parent.id)) is not None:
        raise ConflictError(open_retry)
    now = utcnow()
    job = Job(
        task=parent.task,
        source=str((parent.listing or {}).get("root") or parent.source),
        destination=parent.destination,
        options=parent.options,
        filters=parent.filters,
        status=JobStatus.pending.value,
        created_at=now,
        updated_at=now,
        trace_context=telemetry.current_trace_context(),
        priority=parent.priority,
        max_attempts=parent.max_attempts,
        timeout_seconds=parent.timeout_seconds,
        retry_of=parent.id,
        owner=parent.owner,
        encryption=parent.encryption,
    )
    parent_id = parent.id  # read now: a rollback expires `parent`
    session.add(job)
    try:
        await session.commit()
    except IntegrityError:  # another request made one since: ux_jobs_open_retry
        await session.rollback()
        raise ConflictError(
            await _open_retry(session, parent_id) or f"job {parent_id} is being retried already"
        ) from None
    await session.refresh(job)
    await queue.notify(session)
    metrics.job_created(job.task)
    return job


async def _open_retry(session: AsyncSession, parent_id: str) -> str | None:
    """Why job `parent_id` cannot be retried now: a retry of it is pending or
    running (one at a time: two would process every failed file twice)."""
    stmt = select(Job).where(
        col(Job.retry_of) == parent_id,
        col(Job.status).in_([JobStatus.pending.value, JobStatus.running.value]),
    )
    running = (await session.exec(stmt)).first()
    if running is None:
        return None
    return f"job {parent_id} is being retried already by job {running.id} ({running.status})"
