"""Alembic `upgrade head` yields exactly the models' schema, on both backends."""

from __future__ import annotations

from typing import Any

import pravah.models  # noqa: F401 - registers the tables
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pravah.db import alembic_config, create_engine, migrate
from pravah.migrations import HEAD
from pravah.settings import Settings
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_head_matches_models(db_settings: Settings) -> None:
    await migrate(db_settings)
    await migrate(db_settings)  # idempotent: a second start changes nothing
    engine = create_engine(db_settings)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            tables = await conn.run_sync(_tables)
    finally:
        await engine.dispose()
    assert diff == []
    assert tables == {
        "jobs",
        "api_keys",
        "job_chunks",
        "job_claims",
        "schedules",
        "alembic_version",
    }


def test_head_constant_is_alembics_head() -> None:
    # The start-up fast path trusts HEAD; a new migration must update it.
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


async def test_a_store_that_cannot_be_reached_or_opened_is_named_without_its_password(
    db_settings: Settings,
) -> None:
    """The first contact with the store (migrate) says which store, and why,
    instead of a driver traceback; the password never appears."""
    import pytest
    from pravah.errors import StoreUnavailableError

    cases = [
        ("postgresql+asyncpg://root:s3cret@127.0.0.1:9/test", "Connect"),  # nothing listens
        ("postgresql+asyncpg://root:s3cret@127.0.0.1:5432/pravah_no_such_db", "does not exist"),
    ]
    for url, reason in cases:
        settings = db_settings.model_copy(update={"database_url": url})
        with pytest.raises(StoreUnavailableError) as refused:
            await migrate(settings)
        message = refused.value.message
        assert url.replace("s3cret", "***") in message, message
        assert reason in message and "s3cret" not in message, message


async def test_retries_made_twice_before_0010_leave_one_open_and_the_index_holds(
    db_settings: Settings,
) -> None:
    """0010 adds a unique index over open retries; a store where a job had
    two open retries (made before) must still upgrade, keeping the oldest."""
    from datetime import timedelta

    from pravah.models import utcnow
    from sqlalchemy import text

    def to_0009(connection: Connection) -> None:  # the store may be shared with other tests
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0009")
        connection.execute(text("DELETE FROM job_claims"))
        connection.execute(text("DELETE FROM job_chunks"))
        connection.execute(text("DELETE FROM jobs"))

    await migrate(db_settings)
    engine = create_engine(db_settings)
    async with engine.begin() as conn:
        await conn.run_sync(to_0009)
    now = utcnow()
    insert = text(
        "INSERT INTO jobs (id, status, task, source, options, filters, created_at, "
        "updated_at, files_done, "
        "files_failed, bytes_done, bytes_failed, results_available, attempts, "
        "cancel_requested, priority, incremental, retry_of) VALUES (:id, :status, 'hash', "
        "'/d', '{}', '{}', :at, :at, 0, 0, 0, 0, false, 0, false, 0, 'off', :parent)"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert, {"id": "p", "status": "completed", "at": now, "parent": None}
            )
            for i, status in enumerate(["pending", "pending", "running", "completed"]):
                at = now + timedelta(seconds=i)
                await conn.execute(
                    insert, {"id": f"r{i}", "status": status, "at": at, "parent": "p"}
                )
        await migrate(db_settings)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, status FROM jobs ORDER BY id"))
            statuses = dict(rows.all())
        assert statuses == {
            "p": "completed",
            "r0": "pending",
            "r1": "cancelled",
            "r2": "cancelled",
            "r3": "completed",
        }
        async with engine.begin() as conn:
            with pytest.raises(Exception, match=r"(?i)unique"):
                await conn.execute(
                    insert, {"id": "r4", "status": "pending", "at": now, "parent": "p"}
                )
    finally:
        await engine.dispose()
