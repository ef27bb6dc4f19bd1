"""Alembic `upgrade head` yields exactly the models' schema, on both backends."""

from __future__ import annotations

from typing import Any

import pravah.models  # noqa: F401 - registers the tables
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
