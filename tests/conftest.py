"""Shared fixtures: engine binary and a running engine, settings for SQLite and
PostgreSQL (a fresh database per test module), and a CSV tree with edge cases.

Nothing is skipped silently: a missing engine binary fails the tests that
need it with the build command; an unreachable PostgreSQL fails the
PostgreSQL-parametrized tests with the address tried.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from auth_helpers import TEST_ADMIN_KEY
from pravah.engine_launcher import LocalEngineSync, repo_root
from pravah.settings import Settings
from s3_helpers import moto_url, s3, s3_env  # noqa: F401  (fixtures: a local S3 server)

if TYPE_CHECKING:
    import httpx

# Most `pravah` commands the tests start go to a warm-start resident (as a
# user's would); the residents they leave end 30 s after the last command.
os.environ.setdefault("PRAVAH_WARM_IDLE", "30")
# Warm-start tests start residents of their own, and a CI run may share the
# machine's user with another: the per-user cap must not turn them away.
os.environ.setdefault("PRAVAH_WARM_MAX", "1000")

PG_HOST = os.environ.get("PRAVAH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PRAVAH_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PRAVAH_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("PRAVAH_TEST_PG_DB", "test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuses a run in which two tests outside `serial` share a node id.

    pytest-xdist (`make test`) hands tests to workers by node id, so of two
    such tests it would run one and drop the other without a word.
    """
    seen: set[str] = set()
    shared: set[str] = set()
    for item in items:
        if item.get_closest_marker("serial") is not None:
            continue
        if item.nodeid in seen:
            shared.add(item.nodeid)
        seen.add(item.nodeid)
    if shared:
        raise pytest.UsageError(
            f"tests share a node id, which pytest-xdist would run once: {sorted(shared)}; "
            "mark them `serial` (see the Makefile's test-python)"
        )


# ------------------------------------------------------------------- engine


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    """The engine under test: PRAVAH_ENGINE_BIN, else target/debug/pravah-engine."""
    explicit = os.environ.get("PRAVAH_ENGINE_BIN")
    path = Path(explicit) if explicit else repo_root() / "target" / "debug" / "pravah-engine"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"engine binary {path} is missing; build it with `cargo build -p pravah-engine` "
            "or set PRAVAH_ENGINE_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def engine_url(engine_bin: Path) -> Iterator[str]:
    """A running engine on a free local port for the whole session."""
    with LocalEngineSync(engine_bin, start_timeout=30) as url:
        yield url


@pytest.fixture(scope="session")
def unprivileged_engine_url(
    engine_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An engine for which file modes bite, even when the tests run as root.

    Root reads a chmod-000 file, so a permission test would prove nothing. The
    engine is started through `setpriv` with CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH removed from its bounding set: still uid 0 (it can
    write the root-owned workspace), but no longer above file modes.
    """
    binary = engine_bin
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to drop root's file capabilities")
        wrapper = tmp_path_factory.mktemp("unprivileged") / "pravah-engine"
        wrapper.write_text(
            "#!/bin/sh\n"
            f'exec {setpriv} --bounding-set -dac_override,-dac_read_search {engine_bin} "$@"\n'
        )
        wrapper.chmod(0o755)
        binary = wrapper
    with LocalEngineSync(binary, start_timeout=30) as url:
        yield url


# ----------------------------------------------------------------- settings


def _base_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "poll_interval": 0.1,
        "progress_persist_interval": 0.1,
        "heartbeat_interval": 1.0,
        "shutdown_timeout": 2.0,
        "log_level": "INFO",
        "admin_key": TEST_ADMIN_KEY,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings with a SQLite job store in a fresh state dir."""
    return _base_settings(tmp_path)


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module, dropped afterwards."""
    name = f"pravah_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is not reachable: {exc}",
            pytrace=False,
        )
    yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_settings(tmp_path: Path, pg_database_url: str) -> Iterator[Settings]:
    """Settings with the module's PostgreSQL database (emptied after each test)."""
    yield _base_settings(tmp_path, database_url=pg_database_url)
    asyncio.run(_truncate(pg_database_url))


async def _truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.jobs') IS NOT NULL")
        if exists:
            await conn.execute("TRUNCATE jobs CASCADE")
            await conn.execute("TRUNCATE job_claims, schedules")
        if await conn.fetchval("SELECT to_regclass('public.api_keys') IS NOT NULL"):
            await conn.execute("TRUNCATE api_keys")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on each backend in turn: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        settings: Settings = request.getfixturevalue("sqlite_settings")
    else:
        settings = request.getfixturevalue("pg_settings")
    return settings


# ----------------------------------------------------------------- CSV tree


@dataclass
class CsvTree:
    """A generated source folder and what a csv-header run must report for it."""

    root: Path
    # Relative path -> expected header columns, for files that must succeed.
    expected: dict[str, list[str]] = field(default_factory=dict)
    # Relative paths of files that must fail (binary, empty, ...).
    failing: set[str] = field(default_factory=set)
    # Relative paths that exist but must not be listed (hidden dir).
    hidden: set[str] = field(default_factory=set)


def make_csv_tree(root: Path, *, big_line: bool = True) -> CsvTree:
    """Write a source tree with the csv-header edge cases."""
    tree = CsvTree(root=root)
    root.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes, columns: list[str] | None = None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if columns is None:
            tree.failing.add(rel)
        else:
            tree.expected[rel] = columns

    put("plain.csv", b"id,name,amount\n1,a,2\n", ["id", "name", "amount"])
    put(
        "quoted.csv",
        b'"id","full, name","note\nline2"\n1,"x, y",z\n',
        ["id", "full, name", "note\nline2"],
    )
    put("bom.csv", b"\xef\xbb\xbfcol_a,col_b\n1,2\n", ["col_a", "col_b"])
    put("crlf.csv", b"x,y,z\r\n1,2,3\r\n", ["x", "y", "z"])
    put("semicolon.csv", b"a;b;c\n1;2;3\n", ["a", "b", "c"])
    put("tab.tsv.csv", b"a\tb\tc\n1\t2\t3\n", ["a", "b", "c"])
    put("pipe.csv", b"p|q|r\n1|2|3\n", ["p", "q", "r"])
    # Not UTF-8: fails unless the task's encoding_errors option says "replace".
    put("latin1.csv", "café,naïve\n1,2\n".encode("latin-1"), None)
    put("nested/deeper/deep.csv", b"k,v\n1,2\n", ["k", "v"])
    put("nested/sales.csv", b"region,total\nn,1\n", ["region", "total"])
    put("empty.csv", b"", None)
    put("binary.csv", bytes(range(256)) * 4, None)
    if big_line:
        # A 10 MB single line: a header too long to be a header.
        put("big_line.csv", b"a," * (5 * 1024 * 1024), None)
    # A file name that is not UTF-8.
    raw_name = os.fsencode(str(root / "nested")) + b"/r\xe9sum\xe9.csv"
    with open(raw_name, "wb") as fh:
        fh.write(b"h1,h2\n1,2\n")
    tree.expected["nested/r\ufffdsum\ufffd.csv"] = ["h1", "h2"]
    hidden = root / ".hidden" / "secret.csv"
    hidden.parent.mkdir()
    hidden.write_bytes(b"s1,s2\n")
    tree.hidden.add(".hidden/secret.csv")
    return tree


@pytest.fixture
def csv_tree(tmp_path: Path) -> CsvTree:
    """The edge-case CSV tree in a fresh folder."""
    return make_csv_tree(tmp_path / "data")


@pytest.fixture
async def api_no_worker(db_settings: Settings, engine_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API on each backend without a worker: jobs stay pending."""
    from api_helpers import api_client

    settings = db_settings.model_copy(update={"engine_urls": [engine_url], "run_worker": False})
    async with api_client(settings) as client:
        yield client
