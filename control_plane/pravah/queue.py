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
    """Mark the best due pending job running for `worker_id`; return its id, or None.

    Best: highest priority, then oldest; due: its backoff (run_after) passed.
    The claim is recorded in the claim history (job_claims) atomically.
    """
    now = utcnow()
    params = {"worker_id": worker_id, "now": now}
    if _is_postgres(session):
        row = (await _execute(session, query("claim_job_postgresql"), params)).first()
    else:
        row = (await _execute(session, query("claim_job_sqlite"), params)).first()
        if row is not None:
            values: tuple[Any, ...] = tuple(row)
            job_id, attempt = values[0], values[1]
            await _execute(
                session,
                query("record_claim"),
                {"job_id": job_id, "worker_id": worker_id, "attempt": attempt, "now": now},
            )
    await session.commit()
    return str(row[0]) if row is not None else None


async def release_claim(
    session: AsyncSession, job_id: str, worker_id: str, outcome: str, *, commit: bool = True
) -> None:
    """Close this worker's open claim of a job with its outcome (history only)."""
    await _execute(
        session,
        query("release_claim"),
        {"job_id": job_id, "worker_id": worker_id, "outcome": outcome[:32], "now": utcnow()},
    )
    if commit:
        await session.commit()


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before the next try after `attempt` failed ones: base * 2^(attempt-1), capped."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


async def notify(session: AsyncSession) -> None:
    """Wake workers waiting for new jobs (PostgreSQL NOTIFY; no-op on SQLite)."""
    if _is_postgres(session):
        await _execute(session, query("notify_jobs"))
        await session.commit()


async def heartbeat(
    session: AsyncSession, worker_id: str, job_ids: list[str] | None = None
) -> None:
    """Renew the lease of the worker's running jobs (only `job_ids`, when given)."""
    if job_ids is None:
        await _execute(session, query("heartbeat"), {"worker_id": worker_id, "now": utcnow()})
    elif job_ids:
        stmt = query("heartbeat_jobs").bindparams(bindparam("job_ids", expanding=True))
        await _execute(session, stmt, {"worker_id": worker_id, "now": utcnow(), "job_ids": job_ids})
    await session.commit()


async def give_back(session: AsyncSession, job_id: str, worker_id: str) -> None:
    """Return a running job of this worker to pending and close its claim."""
    now = utcnow()
    params = {"job_id": job_id, "worker_id": worker_id, "now": now}
    await _execute(session, query("give_back"), params)
    await _execute(session, query("release_claim"), {**params, "outcome": "given_back"})
    await session.commit()


async def recover_stale(
    session: AsyncSession, lease_timeout: float, max_attempts: int, now: datetime | None = None
) -> tuple[list[str], list[str]]:
    """Requeue (or fail, when out of attempts) running jobs whose lease expired.

    Their open claims are closed as `lease_expired` in the same transaction,
    before any other worker can claim them again.
    """
    now = now or utcnow()
    params = {
        "now": now,
        "stale_before": now - timedelta(seconds=lease_timeout),
        "max_attempts": max_attempts,
    }
    failed = [str(r[0]) for r in (await _execute(session, query("fail_stale_jobs"), params))]
    requeued = [str(r[0]) for r in (await _execute(session, query("requeue_stale_jobs"), params))]
    for job_id in failed + requeued:
        await _execute(session, query("expire_claims"), {"job_id": job_id, "now": now})
    await session.commit()
    return requeued, failed
