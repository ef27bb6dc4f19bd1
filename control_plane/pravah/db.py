"""Async database access and schema migration.

Why: the same code runs on SQLite (embedded default, one file in the state
folder) and PostgreSQL (shared by several control-plane instances). SQLite is
put in WAL mode with a busy timeout so the API can read while a worker writes;
PostgreSQL goes through asyncpg. The schema is owned by Alembic migrations
shipped inside the package (`pravah/migrations/`), applied programmatically by
`migrate()` at start-up - no alembic.ini needed. Alembic is imported only
when the store is behind `migrations.HEAD`: importing it costs more than a
small job.
"""

from __future__ import annotations

import asyncio
import errno
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.errors import ConfigurationError, StoreUnavailableError
from pravah.migrations import HEAD
from pravah.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same for every instance.
_MIGRATION_LOCK_ID = 0x50524156  # "PRAV"
T = TypeVar("T")


async def retrying(fn: Callable[[], Awaitable[T]], *, within: float = 30.0) -> T:
    """`await fn()`, tried again while the database is unreachable, for up to `within` s.

    For the writes a running job cannot lose (a finished chunk, the final
    status): a database restart takes seconds, and the engines' work of those
    seconds is kept instead of redone. Other errors are raised at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.1
    while True:
        try:
            return await fn()
        except (DBAPIError, OSError) as exc:
            # A full disk does not come back in seconds as a restarted
            # database does: the run fails now, saying so (store_full).
            if loop.time() + delay > deadline or store_full(exc) is not None:
                raise
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)


def store_full(exc: BaseException) -> str | None:
    """What ran out of space, when `exc` (or what caused it) is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return "no space left on device"
        text = str(seen)
        if "database or disk is full" in text:  # SQLite
            return "database or disk is full"
        if "could not extend file" in text or "No space left on device" in text:  # PostgreSQL
            return "no space left on device"
        seen = seen.__cause__ or seen.__context__
    return None


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database).expanduser()
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not database.exists():  # SQLite only says "unable to open database file"
                tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise ConfigurationError(
                f"the job store's folder {str(folder)!r} cannot be made or written "
                f"({exc.strerror or exc}); point PRAVAH_STATE_DIR (or DATABASE_URL) "
                "at a writable place"
            ) from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while one writer writes; busy_timeout makes a
    # second writer wait instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    """An AsyncEngine for settings.database_url (SQLite pragmas applied)."""
    url = settings.database_url
    if settings.is_sqlite:
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """The engine and session factory of one process; dispose() on shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (SKIP LOCKED, NOTIFY available)."""
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that is closed afterwards (commit explicitly)."""
        async with self.sessionmaker() as session:
            yield session

    async def ping(self) -> None:
        """Run `SELECT 1`; raises if the database is unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text_ = (cause.strerror if isinstance(cause, OSError) else None) or str(cause)
    return text_.strip().splitlines()[0] if text_.strip() else type(cause).__name__


def current_revision(connection: Connection) -> str | None:
    """The store's Alembic revision, or None before the first migration."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(connection: Connection, revision: str) -> None:
    if revision == "head" and current_revision(connection) == HEAD:
        return
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        # Several instances starting at once: one migrates, the others wait.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    command.upgrade(cfg, revision)


async def migrate(
    settings: Settings, revision: str = "head", *, db: Database | None = None
) -> None:
    """Apply Alembic migrations up to `revision` (default: head).

    With `db`, its pool's connection is used (and kept for the work that
    follows) instead of a connection of its own: on SQLite, closing the last
    connection checkpoints the WAL, which a short command pays only once.
    """
    engine = db.engine if db is not None else create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    except (DBAPIError, OSError) as exc:  # the first contact with the store, for most commands
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailableError(
            f"the job store at {where!r} cannot be used ({_reason(exc)}); is the database "
            "running, and does DATABASE_URL name it?"
        ) from None
    finally:
        if db is None:
            await engine.dispose()
