"""The queue's claim, heartbeat and stale-lease recovery on both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pravah import queue
from pravah.db import Database, migrate
from pravah.models import Job, JobStatus, utcnow
from pravah.settings import Settings


async def _add_jobs(db: Database, n: int) -> list[str]:
    ids = []
    async with db.session() as session:
        base = utcnow()
        for i in range(n):
            job = Job(task="csv-header", source="/tmp", created_at=base + timedelta(seconds=i))
            session.add(job)
            ids.append(job.id)
        await session.commit()
    return ids


async def test_concurrent_claims_never_share_a_job(db_settings: Settings) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        ids = await _add_jobs(db, 6)

        async def claim(worker: str) -> str | None:
            async with db.session() as session:
                return await queue.claim_job(session, worker)

        claimed = await asyncio.gather(*(claim(f"w{i}") for i in range(10)))
        got = [c for c in claimed if c is not None]
        assert sorted(got) == sorted(ids)  # each job exactly once, the rest None
        async with db.session() as session:
            job = await session.get(Job, ids[0])
            assert job is not None
            assert job.status == JobStatus.running.value
            assert job.attempts == 1
            assert job.worker_id and job.started_at and job.heartbeat_at
    finally:
        await db.dispose()


async def test_claim_takes_oldest_first_and_skips_cancel_requested(
    db_settings: Settings,
) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        ids = await _add_jobs(db, 3)
        async with db.session() as session:
            first = await session.get(Job, ids[0])
            assert first is not None
            first.cancel_requested = True
            session.add(first)
            await session.commit()
            assert await queue.claim_job(session, "w") == ids[1]
    finally:
        await db.dispose()


async def test_stale_running_jobs_are_requeued_then_failed(db_settings: Settings) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        (job_id,) = await _add_jobs(db, 1)
        async with db.session() as session:
            assert await queue.claim_job(session, "dead-worker") == job_id
            later = utcnow() + timedelta(seconds=120)
            requeued, failed = await queue.recover_stale(session, 60, 2, now=later)
            assert (requeued, failed) == ([job_id], [])
            assert await queue.claim_job(session, "w2") == job_id  # attempts now 2
            requeued, failed = await queue.recover_stale(session, 60, 2, now=later)
            assert (requeued, failed) == ([], [job_id])
            job = await session.get(Job, job_id, populate_existing=True)
            assert job is not None
            assert job.status == JobStatus.failed.value
            assert job.error and "interrupted 2 times" in job.error
    finally:
        await db.dispose()
