"""The worker end to end: runs queued jobs, and on stop gives running ones back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pravah.db import Database, migrate
from pravah.engine_client import EngineClient
from pravah.jobs import create_job
from pravah.models import Job, JobCreate, JobPublic, JobStatus
from pravah.settings import Settings
from pravah.worker import Worker

if TYPE_CHECKING:
    from conftest import CsvTree


async def _wait_status(db: Database, job_id: str, wanted: set[str], within: float = 30) -> Job:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with db.session() as session:
            job = await session.get(Job, job_id, populate_existing=True)
        assert job is not None
        if job.status in wanted:
            return job
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"job {job_id} stayed {job.status}, wanted {wanted}")
        await asyncio.sleep(0.05)


async def test_worker_runs_queued_jobs_and_reports_progress(
    db_settings: Settings, engine_url: str, csv_tree: CsvTree
) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    seen: list[JobPublic] = []
    try:
        async with EngineClient(engine_url) as client:
            caps = await client.capabilities()
        async with db.session() as session:
            jobs = [
                await create_job(
                    session, JobCreate(source=str(csv_tree.root), task="csv-header"), caps
                )
                for _ in range(3)
            ]
        stop = asyncio.Event()
        worker = Worker(db_settings, [engine_url], db=db, on_progress=seen.append)
        run = asyncio.create_task(worker.run(stop))
        for job in jobs:
            final = await _wait_status(db, job.id, {"completed", "failed"})
            assert final.status == "completed", final.error
            assert final.worker_id == worker.worker_id
        stop.set()
        await asyncio.wait_for(run, 10)
        assert {p.id for p in seen} == {j.id for j in jobs}
        assert any(p.status == JobStatus.completed for p in seen)
    finally:
        await db.dispose()


async def test_stopping_the_worker_requeues_running_jobs(
    db_settings: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(50):
        (source / f"f{i}.csv").write_text("a,b\n")
    original = EngineClient.process

    async def slow_process(self: EngineClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in original(self, *args, **kwargs):
            await asyncio.sleep(1.0)
            yield event

    monkeypatch.setattr(EngineClient, "process", slow_process)
    settings = db_settings.model_copy(update={"shutdown_timeout": 0.2})
    await migrate(settings)
    db = Database(settings)
    try:
        async with EngineClient(engine_url) as client:
            caps = await client.capabilities()
        async with db.session() as session:
            job = await create_job(session, JobCreate(source=str(source), task="csv-header"), caps)
        stop = asyncio.Event()
        run = asyncio.create_task(Worker(settings, [engine_url], db=db).run(stop))
        await _wait_status(db, job.id, {"running"})
        stop.set()
        await asyncio.wait_for(run, 10)
        requeued = await _wait_status(db, job.id, {"pending"}, within=1)
        assert requeued.attempts == 1
        assert requeued.worker_id is None

        monkeypatch.setattr(EngineClient, "process", original)
        stop = asyncio.Event()
        run = asyncio.create_task(Worker(settings, [engine_url], db=db).run(stop))
        final = await _wait_status(db, job.id, {"completed", "failed"})
        stop.set()
        await asyncio.wait_for(run, 10)
        assert final.status == "completed", final.error
        assert final.attempts == 2
        assert final.files_done == 50
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_postgres_notify_wakes_an_idle_worker_at_once(
    pg_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    # Polling once a minute: only LISTEN/NOTIFY can start the job in time.
    settings = pg_settings.model_copy(update={"poll_interval": 60.0})
    await migrate(settings)
    db = Database(settings)
    other = Database(settings)  # the enqueue comes from "another instance"
    try:
        async with EngineClient(engine_url) as client:
            caps = await client.capabilities()
        stop = asyncio.Event()
        run = asyncio.create_task(Worker(settings, [engine_url], db=db).run(stop))
        await asyncio.sleep(0.5)  # the worker is now idle, waiting
        async with other.session() as session:
            job = await create_job(
                session, JobCreate(source=str(tmp_path), task="csv-header"), caps
            )
        final = await _wait_status(db, job.id, {"completed", "failed"}, within=10)
        assert final.status == "completed", final.error
        stop.set()
        await asyncio.wait_for(run, 10)
    finally:
        await db.dispose()
        await other.dispose()
