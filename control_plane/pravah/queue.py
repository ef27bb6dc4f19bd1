"""The job queue on top of the jobs table.

Why no separate broker: PostgreSQL's `FOR UPDATE SKIP LOCKED` makes the jobs
table a correct multi-worker queue, and SQLite's single writer makes the same
claim statement safe there. The SQL lives in `sql/queue.sql` as named blocks
so it can be read and reviewed as SQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import CursorResult, TextClause, bindparam, text
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.models import UTCDateTime, utcnow

_NAME_RE = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)
CHANNEL = "pravah_jobs"


def _parse_blocks(source: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_NAME_RE.finditer(source))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(source)
        body = "\n".join(
            line
            for line in source[match.end() : end].splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        )
        blocks[match.group(1)] = body.strip().rstrip(";")
    return blocks


@cache
def queries() -> dict[str, str]:
    """The named blocks of sql/queue.sql."""
    source = resources.files("pravah").joinpath("sql/queue.sql").read_text("utf-8")
    return _parse_blocks(source)


def query(name: str) -> TextClause:
    """One named statement with its datetime binds typed (UTC on every backend)."""
    stmt = text(queries()[name])
    typed = [
        bindparam(p, type_=UTCDateTime())
        for p in ("now", "stale_before")
        if f":{p}" in queries()[name]
    ]
    return stmt.bindparams(*typed) if typed else stmt


async def _execute(
    session: AsyncSession, stmt: TextClause, params: dict[str, Any] | None = None
) -> CursorResult[Any]:
    # Raw SQL goes through the session's connection (same transaction):
    # sqlmodel's AsyncSession.execute is deprecated for ORM use.
    conn = await session.connection()
    return await conn.execute(stmt, params or {})


def _is_postgres(session: AsyncSession) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "postgresql"


async def claim_job(session: AsyncSession, worker_id: str) -> str | None:
    """Mark the oldest pending job running for `worker_id`; return its id, or None."""
    name = "claim_job_postgresql" if _is_postgres(session) else "claim_job_sqlite"
    result = await _execute(session, query(name), {"worker_id": worker_id, "now": utcnow()})
    row = result.first()
    await session.commit()
    return str(row[0]) if row is not None else None


async def notify(session: AsyncSession) -> None:
    """Wake workers waiting for new jobs (PostgreSQL NOTIFY; no-op on SQLite)."""
    if _is_postgres(session):
        await _execute(session, query("notify_jobs"))
        await session.commit()


async def heartbeat(session: AsyncSession, worker_id: str) -> None:
    """Renew the lease of the worker's running jobs."""
    await _execute(session, query("heartbeat"), {"worker_id": worker_id, "now": utcnow()})
    await session.commit()


async def recover_stale(
    session: AsyncSession, lease_timeout: float, max_attempts: int, now: datetime | None = None
) -> tuple[list[str], list[str]]:
    """Requeue (or fail, when out of attempts) running jobs whose lease expired."""
    now = now or utcnow()
    params = {
        "now": now,
        "stale_before": now - timedelta(seconds=lease_timeout),
        "max_attempts": max_attempts,
    }
    failed = [str(r[0]) for r in (await _execute(session, query("fail_stale_jobs"), params))]
    requeued = [str(r[0]) for r in (await _execute(session, query("requeue_stale_jobs"), params))]
    await session.commit()
    return requeued, failed
