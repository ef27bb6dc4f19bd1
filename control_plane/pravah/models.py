"""Job models: the table model, the request model and the public view.

Why a family (as in FastAPI's full-stack template): `Job` is the row,
`JobCreate` is exactly what a client may send (extra fields forbidden, sizes
and dates parsed from human forms), `JobPublic` is exactly what a client sees
(with a computed progress object), so neither leaks into the other.
Timestamps are timezone-aware UTC everywhere; `UTCDateTime` makes SQLite (which
stores naive text) hand them back aware as well.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from pravah.globs import glob_error
from pravah.units import MAX_DURATION, parse_datetime, parse_duration, parse_size


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """DateTime(timezone=True) that always returns aware UTC datetimes (SQLite too)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite stores text; a naive UTC value keeps its ordering consistent.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JobStatus(StrEnum):
    """Lifecycle of a job: pending -> running -> completed | failed | cancelled."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)


TERMINAL_STATUSES = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})


# ------------------------------------------------------------------ request


# Request limits: a glob is at most this long, a list holds at most this many.
MAX_PATTERN_CHARS = 1000
MAX_PATTERNS = 100
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATTERN_CHARS)]


class JobFilters(BaseModel):
    """Which files of the source take part; every condition must hold."""

    model_config = ConfigDict(extra="forbid")

    include: list[Pattern] = Field(
        default_factory=list, max_length=MAX_PATTERNS, description="Globs, e.g. '**/*.csv'."
    )
    exclude: list[Pattern] = Field(
        default_factory=list, max_length=MAX_PATTERNS, description="Globs that remove files."
    )
    extensions: list[Pattern] = Field(
        default_factory=list, max_length=MAX_PATTERNS, description="Without the dot: 'csv'."
    )
    min_size: int | None = Field(default=None, description="Bytes, or e.g. '100MB', '1.5GiB'.")
    max_size: int | None = Field(default=None, description="Bytes, or e.g. '100MB', '1.5GiB'.")
    modified_after: datetime | None = Field(default=None, description="Inclusive, ISO 8601.")
    modified_before: datetime | None = Field(default=None, description="Exclusive, ISO 8601.")
    min_age: timedelta | None = Field(
        default=None,
        description=(
            "Only files last modified at least this long before the job was created: "
            "'1d', '12h', '90m', '2w', seconds or ISO 8601 ('P1D'). A schedule keeps "
            "the age, so each of its jobs counts back from its own creation."
        ),
    )
    max_age: timedelta | None = Field(
        default=None,
        description="Only files last modified at most this long before the job was created.",
    )
    include_hidden: bool = False
    follow_symlinks: bool = False
    max_depth: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="0 or null: no limit."
    )

    @field_validator("min_size", "max_size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, (int, str)):
            return parse_size(value)
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '100MB'")

    @field_validator("modified_after", "modified_before", mode="before")
    @classmethod
    def _parse_dt(cls, value: Any) -> Any:
        if value is None:
            return None
        return parse_datetime(value)

    @field_validator("min_age", "max_age", mode="before")
    @classmethod
    def _parse_age(cls, value: Any) -> Any:
        if isinstance(value, str):
            age = parse_duration(value)
            if age is not None:
                return age
            text = value.strip()
            if (text and text[0] in "Pp") or text.replace(".", "", 1).isdigit():
                return text  # ISO 8601 or seconds: pydantic's own parsing
            raise ValueError(f"invalid age {value!r}: use e.g. 90m, 12h, 1d, 2w or ISO 8601 'P1D'")
        return value

    @field_validator("min_age", "max_age")
    @classmethod
    def _positive_age(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) < value <= MAX_DURATION:
            raise ValueError("an age must be longer than zero and at most 100 years")
        return value

    @field_validator("include", "exclude", "extensions")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        if any("\x00" in v for v in value):
            raise ValueError("patterns must not contain NUL bytes")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _valid_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            reason = glob_error(glob)
            if reason is not None:
                raise ValueError(f'invalid glob "{glob}": {reason}')
        return value

    @field_validator("extensions")
    @classmethod
    def _normalize_ext(cls, value: list[str]) -> list[str]:
        return [e.strip().lstrip(".").lower() for e in value if e.strip().lstrip(".")]

    @model_validator(mode="after")
    def _check_bounds(self) -> JobFilters:
        if (
            self.min_size is not None
            and self.max_size is not None
            and self.min_size > self.max_size
        ):
            raise ValueError(
                f"min_size ({self.min_size} bytes) is larger than max_size "
                f"({self.max_size} bytes); no file could match"
            )
        if (
            self.modified_after is not None
            and self.modified_before is not None
            and self.modified_after >= self.modified_before
        ):
            raise ValueError("modified_after must be earlier than modified_before")
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is longer than max_age; no file could match")
        return self

    def resolved(self, now: datetime) -> JobFilters:
        """These filters with the ages turned into modification times counted
        back from `now` (a job's creation), so that the engine sees dates only."""
        if self.min_age is None and self.max_age is None:
            return self
        before, after = self.modified_before, self.modified_after
        if self.min_age is not None:
            before = min(filter(None, (before, now - self.min_age)))
        if self.max_age is not None:
            after = max(filter(None, (after, now - self.max_age)))
        ages = {"min_age": None, "max_age": None}
        return self.model_copy(update={"modified_before": before, "modified_after": after, **ages})


def no_nul(value: str | None) -> str | None:
    """`value`, refused if it holds a NUL character: PostgreSQL's text
    cannot store one (SQLite can), so on PostgreSQL a job or schedule that
    named one was a 500, and a schedule whose job held one failed every
    tick. Paths are checked where they are resolved (`pravah.sandbox`)."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _unicode_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options whose every key and string is text that can be stored and shown.

    JSON may escape a lone surrogate (a half of a UTF-16 pair, "\\ud800"),
    which Python decodes into a string no UTF-8 encoder takes. Typed fields
    refuse it; options are free-form, so one such key was stored and then
    made every GET /jobs that listed the job a 500.
    """
    pending: list[Any] = [options]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)  # the keys
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                shown = value.encode("utf-8", "backslashreplace").decode("ascii")
                raise ValueError(
                    f"'{shown}' is not valid Unicode text (it holds a lone UTF-16 surrogate)"
                ) from None
    return options


class PipelineStep(BaseModel):
    """One step of a pipeline: a task and its options."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="Task name, e.g. 'extract'.")
    options: dict[str, Any] = Field(default_factory=dict, description="The task's options.")

    _text = field_validator("task")(no_nul)

    @field_validator("options")
    @classmethod
    def _unicode(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _unicode_options(value)


MAX_PIPELINE_STEPS = 10


class Encryption(BaseModel):
    """Server-side encryption of the objects a job writes to an s3:// destination."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["sse-s3", "sse-kms"] = Field(
        description="'sse-s3': keys managed by the store (AES256); 'sse-kms': a KMS key."
    )
    kms_key_id: str = Field(
        default="",
        max_length=2048,
        description="The KMS key id or ARN for sse-kms; empty: the account's default key.",
    )

    _text = field_validator("kms_key_id")(no_nul)


class JobCreate(BaseModel):
    """What a client sends to create a job (POST /jobs, `pravah run`)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=4096,
        description="A local directory path, a file:// URI or s3://bucket/prefix.",
    )
    task: str | None = Field(
        default=None, max_length=200, description="Task name, e.g. 'csv-header'."
    )
    pipeline: list[PipelineStep] | None = Field(
        default=None,
        description="Instead of 'task': ordered steps, each step's outputs the next one's inputs.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The task's options.")
    filters: JobFilters = Field(default_factory=JobFilters)
    destination: str | None = Field(
        default=None,
        max_length=4096,
        description="Where tasks that write go: a local directory or s3://bucket/prefix.",
    )
    encryption: Encryption | None = Field(
        default=None,
        description="Server-side encryption of objects written to an s3:// destination "
        "(default: PRAVAH_S3_SSE).",
    )
    max_error_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The job ends 'failed' when more than this share of files failed "
        "(0-1); by default failed files never fail the job.",
    )
    priority: int = Field(
        default=0, ge=-100, le=100, description="Higher runs first; equal ones oldest first."
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=100, description="Tries before giving up; default from settings."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds one attempt may run before the job fails."
    )
    lineage: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Name of a job lineage; with 'incremental', runs skip files seen before.",
    )
    incremental: Literal["off", "stat", "hash"] = Field(
        default="off",
        description="'stat': only files new or changed (path, size, mtime) since the "
        "lineage's last successful run; 'hash': also compare content hashes.",
    )

    _text = field_validator("task", "lineage")(no_nul)

    @field_validator("options")
    @classmethod
    def _unicode(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _unicode_options(value)

    @model_validator(mode="after")
    def _task_or_pipeline(self) -> JobCreate:
        if self.pipeline is not None:
            if self.task:
                raise ValueError("give either 'task' or 'pipeline', not both")
            if not self.pipeline:
                raise ValueError("'pipeline' needs at least one step")
            if len(self.pipeline) > MAX_PIPELINE_STEPS:
                raise ValueError(f"'pipeline' has more than {MAX_PIPELINE_STEPS} steps")
            if self.options:
                raise ValueError("with 'pipeline', give options inside each step")
            return self
        if not self.task:
            raise ValueError("'task' is required, e.g. \"csv-header\" (see GET /config)")
        return self

    def steps(self) -> list[PipelineStep]:
        """The job as steps: a single task is a one-step pipeline."""
        if self.pipeline is not None:
            return list(self.pipeline)
        return [PipelineStep(task=self.task or "", options=self.options)]


# -------------------------------------------------------------------- table


# The jobs an open retry may be: pending or running (see ux_jobs_open_retry).
OPEN_RETRY = "retry_of IS NOT NULL AND status IN ('pending', 'running')"


class Job(SQLModel, table=True):
    """One job row. Counters are cumulative; totals are null until listing ends."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_status_created_at", "status", "created_at"),
        sa.Index("ix_jobs_claim", "status", "priority", "created_at"),
        # At most one unfinished retry of a job (pravah.jobs.create_retry_job).
        sa.Index(
            "ux_jobs_open_retry",
            "retry_of",
            unique=True,
            sqlite_where=sa.text(OPEN_RETRY),
            postgresql_where=sa.text(OPEN_RETRY),
        ),
    )

    id: str = SQLField(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    status: str = SQLField(default=JobStatus.pending.value, max_length=16, nullable=False)
    task: str = SQLField(max_length=200, nullable=False)
    source: str = SQLField(sa_column=sa.Column(sa.Text, nullable=False))
    destination: str | None = SQLField(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    options: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    filters: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    created_at: datetime = SQLField(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False, index=True)
    )
    started_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    finished_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True, index=True)
    )
    updated_at: datetime = SQLField(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False)
    )
    files_total: int | None = SQLField(default=None, sa_column=sa.Column(sa.BigInteger))
    bytes_total: int | None = SQLField(default=None, sa_column=sa.Column(sa.BigInteger))
    files_done: int = SQLField(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    files_failed: int = SQLField(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    bytes_done: int = SQLField(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    bytes_failed: int = SQLField(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    error: str | None = SQLField(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    summary: dict[str, Any] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    workspace: str | None = SQLField(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # Set when the run left per-file results (a manifest of part files), so
    # clients know whether to ask for them; a job cancelled or failed before
    # any batch finished has none.
    results_available: bool = SQLField(
        default=False,
        sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()),
    )
    # When the workspace (per-file results, listing chunks) was removed,
    # PRAVAH_RESULTS_RETENTION after the job finished (pravah.retention).
    results_removed_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    attempts: int = SQLField(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    cancel_requested: bool = SQLField(
        default=False,
        sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()),
    )
    worker_id: str | None = SQLField(default=None, max_length=200, nullable=True)
    heartbeat_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    # W3C trace context (traceparent, tracestate) of the request that created
    # the job; the worker's span continues that trace (pravah.telemetry).
    trace_context: dict[str, str] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    # Owner of the API key that created the job (pravah.auth); only that
    # owner and admins see it. Null for jobs of `pravah run` and auth=off.
    owner: str | None = SQLField(
        default=None, sa_column=sa.Column(sa.String(200), nullable=True, index=True)
    )
    # Queue semantics (pravah.queue): higher priority is claimed first; a
    # failed attempt waits until run_after (exponential backoff); a job runs
    # at most max_attempts times (null: settings.max_attempts).
    priority: int = SQLField(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    run_after: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    max_attempts: int | None = SQLField(default=None, sa_column=sa.Column(sa.Integer))
    timeout_seconds: float | None = SQLField(default=None, sa_column=sa.Column(sa.Float))
    # The listing's totals and root, set once when the listing is written and
    # its chunk rows stored: a resumed job with it set does not list again.
    listing: dict[str, Any] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    # Incremental runs (pravah.incremental) and retries of failed files.
    lineage: str | None = SQLField(default=None, max_length=200, nullable=True)
    incremental: str = SQLField(
        default="off", sa_column=sa.Column(sa.String(8), nullable=False, server_default="off")
    )
    retry_of: str | None = SQLField(default=None, max_length=36, nullable=True)
    schedule_id: str | None = SQLField(default=None, max_length=36, nullable=True)
    # Server-side encryption for an s3:// destination ({"mode", "kms_key_id"});
    # null: the settings' default. A key id is not a secret.
    encryption: dict[str, str] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )


class ChunkStatus(StrEnum):
    """Lifecycle of one chunk of a job: pending -> done | failed."""

    pending = "pending"
    done = "done"
    failed = "failed"


class JobChunk(SQLModel, table=True):
    """One chunk of a job's listing: a checkpoint (pravah.chunks).

    One row per chunk (a few thousand files), never per file. `parts` are the
    chunk's results part files, `summary` the engine's summary of the chunk;
    both are kept so a resumed job redoes only chunks not `done`.
    """

    __tablename__ = "job_chunks"

    job_id: str = SQLField(
        sa_column=sa.Column(
            sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        )
    )
    # Pipeline step the chunk belongs to (1 for single-task jobs).
    step: int = SQLField(default=1, sa_column=sa.Column(sa.Integer, primary_key=True))
    idx: int = SQLField(sa_column=sa.Column(sa.Integer, primary_key=True))
    uri: str = SQLField(sa_column=sa.Column(sa.Text, nullable=False))
    files: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    bytes: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    status: str = SQLField(default=ChunkStatus.pending.value, max_length=16, nullable=False)
    attempts: int = SQLField(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    engine: str | None = SQLField(default=None, max_length=200, nullable=True)
    files_done: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    files_failed: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    bytes_done: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    bytes_failed: int = SQLField(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    parts: list[dict[str, Any]] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    summary: dict[str, Any] | None = SQLField(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    error: str | None = SQLField(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    updated_at: datetime = SQLField(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False)
    )


class JobClaim(SQLModel, table=True):
    """Claim history: who held a job when (pravah.queue).

    A row is written with every claim and closed (`released_at`, `outcome`)
    when the holder lets go or its lease is taken away. Two rows of one job
    never overlap; the tests check it.
    """

    __tablename__ = "job_claims"

    id: int | None = SQLField(default=None, primary_key=True)
    job_id: str = SQLField(max_length=36, nullable=False, index=True)
    worker_id: str = SQLField(max_length=200, nullable=False)
    attempt: int = SQLField(sa_column=sa.Column(sa.Integer, nullable=False))
    claimed_at: datetime = SQLField(sa_column=sa.Column(UTCDateTime, nullable=False))
    released_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    outcome: str | None = SQLField(default=None, max_length=32, nullable=True)


# ------------------------------------------------------------------- public


class JobProgress(BaseModel):
    """Counts so far, with rate and ETA once totals are known.

    `files_done`/`bytes_done` count every finished file, failed ones included;
    `files_failed`/`bytes_failed` are the failed subset (as in the engine).
    """

    files_total: int | None
    bytes_total: int | None
    files_done: int
    files_failed: int
    bytes_done: int
    bytes_failed: int
    percent: float | None = Field(description="0-100 by bytes (by files for empty files).")
    files_per_second: float | None
    bytes_per_second: float | None
    eta_seconds: float | None


class JobPublic(BaseModel):
    """What clients see of a job."""

    id: str
    status: JobStatus
    task: str
    source: str
    destination: str | None
    options: dict[str, Any]
    filters: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    progress: JobProgress
    error: str | None
    summary: dict[str, Any] | None
    results_available: bool
    results_removed_at: datetime | None = None
    attempts: int
    cancel_requested: bool
    owner: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    run_after: datetime | None = None
    lineage: str | None = None
    incremental: str = "off"
    retry_of: str | None = None
    schedule_id: str | None = None
    encryption: dict[str, str] | None = None

    @classmethod
    def from_job(cls, job: Job, now: datetime | None = None) -> JobPublic:
        """The public view of a row, computing rate and ETA."""
        return cls(
            id=job.id,
            status=JobStatus(job.status),
            task=job.task,
            source=job.source,
            destination=job.destination,
            options=job.options or {},
            filters=job.filters or {},
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            progress=compute_progress(job, now),
            error=job.error,
            summary=job.summary,
            results_available=job.results_available,
            results_removed_at=job.results_removed_at,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            owner=job.owner,
            priority=job.priority,
            max_attempts=job.max_attempts,
            run_after=job.run_after,
            lineage=job.lineage,
            incremental=job.incremental,
            retry_of=job.retry_of,
            schedule_id=job.schedule_id,
            encryption=job.encryption,
        )


def compute_progress(job: Job, now: datetime | None = None) -> JobProgress:
    """Percent, rates and ETA from the counters and the running time."""
    # As in the engine's Progress: *_done counts every finished file, failed
    # ones included; *_failed is the failed subset.
    files_seen = job.files_done
    bytes_seen = job.bytes_done
    percent: float | None = None
    # By bytes when the listing has sizes; by files when it has none (a
    # size-independent task such as csv-header is listed without them).
    if job.files_total is not None:
        if job.bytes_total:
            percent = min(100.0, 100.0 * bytes_seen / job.bytes_total)
        elif job.files_total > 0:
            percent = min(100.0, 100.0 * files_seen / job.files_total)
        else:
            percent = 100.0 if job.status == JobStatus.completed else 0.0
    files_rate: float | None = None
    bytes_rate: float | None = None
    eta: float | None = None
    if job.started_at is not None:
        end = job.finished_at or now or utcnow()
        elapsed = (end - job.started_at).total_seconds()
        if elapsed > 0:
            files_rate = files_seen / elapsed
            bytes_rate = bytes_seen / elapsed
    if job.status == JobStatus.running and job.files_total is not None:
        if job.bytes_total and bytes_rate:
            eta = max(0.0, (job.bytes_total - bytes_seen) / bytes_rate)
        elif job.files_total and files_rate:
            eta = max(0.0, (job.files_total - files_seen) / files_rate)
    elif job.status in TERMINAL_STATUSES:
        eta = 0.0
    return JobProgress(
        files_total=job.files_total,
        bytes_total=job.bytes_total,
        files_done=job.files_done,
        files_failed=job.files_failed,
        bytes_done=job.bytes_done,
        bytes_failed=job.bytes_failed,
        percent=percent,
        files_per_second=files_rate,
        bytes_per_second=bytes_rate,
        eta_seconds=eta,
    )


class JobList(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobPublic]
    total: int
    limit: int
    offset: int


# ------------------------------------------------------------------ API keys


class ApiKey(SQLModel, table=True):
    """One API key: only a salted scrypt hash of its secret is stored (pravah.auth)."""

    __tablename__ = "api_keys"

    id: str = SQLField(primary_key=True, max_length=32)
    name: str = SQLField(max_length=200, nullable=False)
    owner: str = SQLField(max_length=200, nullable=False)
    role: str = SQLField(max_length=16, nullable=False)
    salt: str = SQLField(max_length=64, nullable=False)
    secret_hash: str = SQLField(max_length=128, nullable=False)
    created_at: datetime = SQLField(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    revoked_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )


# ---------------------------------------------------------------- schedules


class Schedule(SQLModel, table=True):
    """A recurring job (pravah.schedules): a cron expression and a job request."""

    __tablename__ = "schedules"
    __table_args__ = (sa.Index("ix_schedules_due", "paused", "next_run_at"),)

    id: str = SQLField(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    name: str = SQLField(max_length=200, nullable=False)
    cron: str = SQLField(max_length=200, nullable=False)
    # The validated JobCreate body every run is created from.
    job: dict[str, Any] = SQLField(sa_column=sa.Column(sa.JSON, nullable=False))
    paused: bool = SQLField(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    # The tick that fires next; an instance claims a tick by moving this on
    # (UPDATE ... WHERE next_run_at = :tick), so each tick fires exactly once.
    next_run_at: datetime = SQLField(sa_column=sa.Column(UTCDateTime, nullable=False))
    last_run_at: datetime | None = SQLField(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True)
    )
    last_job_id: str | None = SQLField(default=None, max_length=36, nullable=True)
    created_at: datetime = SQLField(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False)
    )
    # Owner of the key that made the schedule (pravah.auth): only that owner
    # and admins see it, and the jobs it fires belong to that owner.
    owner: str | None = SQLField(
        default=None, sa_column=sa.Column(sa.String(200), nullable=True, index=True)
    )


class ScheduleCreate(BaseModel):
    """What a client sends to create a schedule (POST /schedules)."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=200, description="e.g. '0 3 * * *' (UTC).")
    name: str | None = Field(default=None, max_length=200)
    job: JobCreate

    _text = field_validator("cron", "name")(no_nul)


class SchedulePublic(BaseModel):
    """What clients see of a schedule."""

    id: str
    name: str
    cron: str
    job: dict[str, Any]
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: str | None
    created_at: datetime
    owner: str | None = None

    @classmethod
    def from_row(cls, row: Schedule) -> SchedulePublic:
        """The public view of a row."""
        return cls.model_validate(row, from_attributes=True)
