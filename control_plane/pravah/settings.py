"""Configuration of the control plane, from environment variables.

Why one class: every knob is declared once with its default and its
environment name (`PRAVAH_*`, or the standard `DATABASE_URL` / `LOG_LEVEL`),
so `.env.template`, the API, the workers and the CLI cannot disagree. With no
environment at all the defaults give the embedded setup: a SQLite file in the
state folder and a local engine started on demand.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pravah.units import parse_duration


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/pravah`, else `~/.local/state/pravah`."""
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "pravah"


# The job store's drivers: what normalize_database_url turns a URL into.
SUPPORTED_DATABASE_URLS = ("postgresql+asyncpg://", "sqlite+aiosqlite://")


def normalize_database_url(url: str) -> str:
    """Rewrite plain driver-less URLs to the async drivers SQLAlchemy needs.

    `postgres://` and `postgresql://` (as Heroku-style providers hand them out)
    become `postgresql+asyncpg://`; `sqlite://` becomes `sqlite+aiosqlite://`.
    URLs that already name a driver are kept.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Values that are obviously not secrets: a template's placeholder copied as is.
_PLACEHOLDERS = {"changethis", "changeme", "change_me", "secret", "password", "admin", "pravah"}
MIN_SECRET_LENGTH = 16


def _check_secret(name: str, value: str, environment: str) -> None:
    """Reject (production) or warn about (development) placeholder and short secrets."""
    problem = None
    if value.strip().lower().replace("-", "_") in _PLACEHOLDERS or "change_me" in value.lower():
        problem = f"{name} is a placeholder value"
    elif len(value) < MIN_SECRET_LENGTH:
        problem = f"{name} is shorter than {MIN_SECRET_LENGTH} characters"
    if problem is None:
        return
    message = f"{problem}; use a long random value, e.g. `openssl rand -hex 32`"
    if environment == "production":
        raise ValueError(message)
    warnings.warn(message, UserWarning, stacklevel=2)


class Settings(BaseSettings):
    """All control-plane settings; see `.env.template` for the environment names."""

    model_config = SettingsConfigDict(
        env_prefix="PRAVAH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Job store (SQLite default), job workspaces and results live here.",
    )
    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("DATABASE_URL", "PRAVAH_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; empty means a SQLite file in state_dir.",
    )
    engine_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated engine addresses (host:port); empty starts a local engine.",
    )
    engine_bin: Path | None = Field(
        default=None, description="Path of the pravah-engine executable to start locally."
    )
    engine_start_timeout: float = Field(default=30.0, gt=0)
    engine_stop_timeout: float = Field(default=5.0, gt=0)
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("LOG_LEVEL", "PRAVAH_LOG_LEVEL", "log_level"),
    )
    run_worker: bool = Field(default=True, description="Run the job worker inside the API.")
    worker_concurrency: int = Field(default=2, ge=1, description="Jobs one worker runs at once.")
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between queue polls.")
    heartbeat_interval: float = Field(default=5.0, gt=0)
    lease_timeout: float = Field(
        default=60.0, gt=0, description="A running job without heartbeat this long is requeued."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Tries of a job (unless it sets its own) before it fails."
    )
    retry_backoff: float = Field(
        default=2.0, ge=0, description="Seconds before the 2nd try; doubled for every next one."
    )
    retry_backoff_max: float = Field(default=300.0, ge=0, description="Longest retry delay.")
    job_timeout: float | None = Field(
        default=None, gt=0, description="Seconds one attempt may run (jobs may set their own)."
    )
    results_retention: timedelta | None = Field(
        default=timedelta(days=30),
        description="How long a finished job's per-file results are kept (30d, 12h, 2w); "
        "'never' keeps them. The job itself, its counts and summary are kept.",
    )
    engine_window: int = Field(
        default=0,
        ge=0,
        description="Chunks in flight per engine; 0: from the engine's thread count.",
    )
    # Measured on 100k small CSVs (pravah run, 2 cores): 1,000-file chunks
    # took 4.2 s end to end, 10,000-file chunks 1.6 s. Each chunk costs one
    # Process call and one checkpoint commit; larger chunks amortise that,
    # and a resumed job redoes at most one chunk's worth per engine.
    chunk_files: int = Field(
        default=10_000, ge=0, description="Files per listing chunk; 0: the engine's default."
    )
    chunk_max_attempts: int = Field(
        default=3, ge=1, description="Engine failures one chunk may cause before it fails."
    )
    shutdown_timeout: float = Field(
        default=10.0, ge=0, description="Grace period for running jobs on worker stop."
    )
    progress_persist_interval: float = Field(
        default=0.5, gt=0, description="Least seconds between two progress writes to the DB."
    )
    results_default_limit: int = Field(default=100, ge=1)
    results_max_limit: int = Field(default=1000, ge=1)
    jobs_default_limit: int = Field(default=50, ge=1)
    jobs_max_limit: int = Field(default=500, ge=1)
    upload_max_bytes: int = Field(
        default=1024**3, ge=1, description="Largest file POST /uploads accepts (413 above)."
    )
    # ------------------------------------------------------------ security
    environment: Literal["development", "production"] = Field(
        default="development",
        description="production rejects placeholder or short secrets instead of warning.",
    )
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma list; when set, job sources and destinations must lie inside one of these "
            "directories after resolving '..' and symlinks (uploads are always allowed). "
            "The engine reads the same variable."
        ),
    )
    allowed_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of S3 buckets s3:// sources and destinations may name.",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        description="S3 access key, passed to a locally started engine (never stored).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        description="S3 secret key, passed to a locally started engine (never stored).",
    )
    aws_session_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_SESSION_TOKEN", "aws_session_token"),
        description="Optional S3 session token, passed like the keys.",
    )
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_REGION", "aws_region"),
        description="S3 region (the engine defaults to us-east-1).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "s3_endpoint_url"),
        description="S3-compatible endpoint (MinIO, Ceph, R2), path-style addressing.",
    )
    s3_sse: Literal["", "none", "sse-s3", "sse-kms"] = Field(
        default="",
        description="Server-side encryption of objects jobs write to s3:// destinations.",
    )
    s3_sse_kms_key_id: str = Field(
        default="", description="KMS key id for s3_sse=sse-kms (empty: the account default)."
    )
    auth: Literal["on", "off"] = Field(
        default="on", description="'off' turns API keys off: every caller is an admin."
    )
    admin_key: SecretStr | None = Field(
        default=None, description="A bootstrap admin API key (compared, never stored)."
    )
    admin_key_file: Path | None = Field(
        default=None, description="File holding the admin key (Docker/Kubernetes secrets)."
    )
    metrics_public: bool = Field(
        default=True, description="GET /metrics without a key (false: a viewer key is needed)."
    )
    max_body_bytes: int = Field(
        default=1024**2, ge=1024, description="Largest JSON request body (413 above)."
    )
    tls_cert_file: Path | None = Field(default=None, description="REST API TLS certificate (PEM).")
    tls_key_file: Path | None = Field(default=None, description="REST API TLS private key (PEM).")
    engine_tls_ca_file: Path | None = Field(
        default=None, description="CA that signed the engines' certificates: gRPC over TLS."
    )
    engine_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate presented to engines (mutual TLS)."
    )
    engine_tls_key_file: Path | None = Field(
        default=None, description="Private key of engine_tls_cert_file."
    )

    @field_validator("engine_urls", "allowed_buckets", mode="before")
    @classmethod
    def _split_engine_urls(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_allowed_roots(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("results_retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("never", "forever", "off"):
            return None
        parsed = parse_duration(text)
        if parsed is None:
            raise ValueError(
                f"invalid retention {value!r}: give a duration such as 30d, 12h or 2w, or never"
            )
        return parsed

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(
                f"invalid log level {value!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return level

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if self.admin_key is None and self.admin_key_file is not None:
            try:
                text = self.admin_key_file.read_text("utf-8").strip()
            except OSError as exc:
                raise ValueError(f"admin_key_file cannot be read: {exc.strerror}") from None
            self.admin_key = SecretStr(text) if text else None
        if self.admin_key is not None:
            _check_secret("PRAVAH_ADMIN_KEY", self.admin_key.get_secret_value(), self.environment)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file (or neither)")
        if (self.engine_tls_cert_file is None) != (self.engine_tls_key_file is None):
            raise ValueError("set both engine_tls_cert_file and engine_tls_key_file (or neither)")
        return self

    @model_validator(mode="after")
    def _resolve_database_url(self) -> Settings:
        self.state_dir = self.state_dir.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.state_dir / 'pravah.db'}"
        else:
            self.database_url = normalize_database_url(self.database_url)
        if not self.database_url.startswith(SUPPORTED_DATABASE_URLS):
            scheme = self.database_url.split("://", 1)[0] if "://" in self.database_url else "none"
            raise ValueError(
                f"DATABASE_URL must name PostgreSQL (postgresql://user@host/db) or SQLite "
                f"(sqlite:///path/to/file.db); its scheme is {scheme!r}"
            )
        try:  # what SQLAlchemy would fail on later, with a traceback
            _ = urlsplit(self.database_url).port
        except ValueError as exc:
            raise ValueError(f"DATABASE_URL is not a valid URL: {exc}") from None
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the job store is SQLite (single writer, no SKIP LOCKED)."""
        return self.database_url.startswith("sqlite")

    @property
    def uploads_dir(self) -> Path:
        """Parent of the uploaded files' folders (one folder per upload)."""
        return self.state_dir / "uploads"

    @property
    def auth_enabled(self) -> bool:
        """False only with the explicit PRAVAH_AUTH=off."""
        return self.auth == "on"

    @property
    def engine_tls(self) -> bool:
        """True when the control plane talks to engines over TLS."""
        return self.engine_tls_ca_file is not None

    @property
    def jobs_dir(self) -> Path:
        """Parent of the per-job workspaces."""
        return self.state_dir / "jobs"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
