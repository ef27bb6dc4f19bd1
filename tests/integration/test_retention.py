"""Finished jobs' per-file results expire after PRAVAH_RESULTS_RETENTION.

On both backends the sweep removes exactly the workspaces of jobs that
finished before the cutoff, keeps their rows (counts, summary), never
removes a folder outside the jobs folder, and the API then answers 410 with
the reason. `pravah run` sweeps its own state folder while its job runs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pravah.cli.options import build_job_request
from pravah.cli.render import JobProgress
from pravah.cli.run import run_embedded
from pravah.db import Database, migrate
from pravah.models import Job, JobStatus, utcnow
from pravah.retention import BATCH, prune_results
from pravah.settings import Settings
from store_helpers import finished_ago


def _workspace(settings: Settings, job_id: str) -> Path:
    folder = settings.jobs_dir / job_id
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "part-0.jsonl").write_text('{"path":"a.csv","columns":["a"]}\n')
    return folder


async def _add(
    db: Database,
    settings: Settings,
    *,
    status: JobStatus,
    finished_days_ago: float | None,
    workspace: Path | None = None,
) -> Job:
    now = utcnow()
    job = Job(
        task="csv-header",
        source="/tmp",
        status=status.value,
        created_at=now - timedelta(days=60),
        finished_at=None if finished_days_ago is None else now - timedelta(days=finished_days_ago),
        files_done=1,
        summary={"files": 1},
        results_available=True,
    )
    job.workspace = str(workspace or _workspace(settings, job.id))
    async with db.session() as session:
        session.add(job)
        await session.commit()
    return job


def _has_results(job: Job) -> bool:
    return Path(job.workspace or "", "results", "part-0.jsonl").is_file()


async def test_workspaces_past_the_retention_are_removed_and_the_jobs_kept(
    db_settings: Settings, tmp_path: Path
) -> None:
    settings = db_settings.model_copy(update={"results_retention": timedelta(days=30)})
    await migrate(settings)
    db = Database(settings)
    try:
        old = await _add(db, settings, status=JobStatus.completed, finished_days_ago=31)
        failed = await _add(db, settings, status=JobStatus.failed, finished_days_ago=45)
        recent = await _add(db, settings, status=JobStatus.completed, finished_days_ago=29)
        running = await _add(db, settings, status=JobStatus.running, finished_days_ago=None)
        # A row naming a folder outside the jobs folder: marked, never removed.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("not the service's")
        stray = await _add(
            db, settings, status=JobStatus.completed, finished_days_ago=40, workspace=elsewhere
        )

        async with db.session() as session:
            assert await prune_results(session, settings, utcnow()) == 3
        assert [_has_results(j) for j in (old, failed, recent, running)] == [
            False,
            False,
            True,
            True,
        ]
        assert (elsewhere / "keep.txt").read_text() == "not the service's"
        async with db.session() as session:
            for job_id, gone in (
                (old.id, True),
                (failed.id, True),
                (stray.id, True),
                (recent.id, False),
                (running.id, False),
            ):
                row = await session.get(Job, job_id)
                assert row is not None
                assert (row.results_removed_at is not None) is gone, job_id
                assert row.results_available is not gone, job_id
                assert row.summary == {"files": 1} and row.files_done == 1  # the job stays
            # Nothing left to expire; "never" expires nothing.
            assert await prune_results(session, settings, utcnow()) == 0
            keep = settings.model_copy(update={"results_retention": None})
            later = utcnow() + timedelta(days=365)
            assert await prune_results(session, keep, later) == 0
    finally:
        await db.dispose()


async def test_a_sweep_takes_at_most_one_batch(sqlite_settings: Settings) -> None:
    await migrate(sqlite_settings)
    db = Database(sqlite_settings)
    try:
        async with db.session() as session:
            for _ in range(BATCH + 3):
                session.add(
                    Job(
                        task="csv-header",
                        source="/tmp",
                        status=JobStatus.completed.value,
                        finished_at=utcnow() - timedelta(days=90),
                        workspace=str(sqlite_settings.jobs_dir / "missing"),
                    )
                )
            await session.commit()
            assert await prune_results(session, sqlite_settings, utcnow()) == BATCH
            assert await prune_results(session, sqlite_settings, utcnow()) == 3
    finally:
        await db.dispose()


async def test_the_api_says_when_results_were_removed(
    api_no_worker: httpx.AsyncClient, db_settings: Settings
) -> None:
    api = api_no_worker
    db = Database(db_settings)
    try:
        job = await _add(db, db_settings, status=JobStatus.completed, finished_days_ago=40)
        async with db.session() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.files_failed = 1
            session.add(row)
            await session.commit()
        before = await api.get(f"/jobs/{job.id}/results")
        assert before.status_code == 200, before.text
        assert before.json()["items"] == [{"path": "a.csv", "columns": ["a"]}]

        async with db.session() as session:
            assert await prune_results(session, db_settings, utcnow()) == 1
    finally:
        await db.dispose()
    for fmt in ("json", "jsonl"):
        gone = await api.get(f"/jobs/{job.id}/results", params={"format": fmt})
        assert gone.status_code == 410, gone.text
        detail = gone.json()["detail"]
        assert "per-file results were removed on" in detail
        assert "PRAVAH_RESULTS_RETENTION" in detail
    shown = (await api.get(f"/jobs/{job.id}")).json()
    assert shown["results_available"] is False
    assert shown["results_removed_at"] is not None
    assert shown["summary"] == {"files": 1}
    retry = await api.post(f"/jobs/{job.id}/retry-failed")
    assert retry.status_code == 410, retry.text
    assert "nothing to retry" in retry.json()["detail"]


async def test_pravah_run_sweeps_its_state_folder(
    sqlite_settings: Settings, engine_bin: Path, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(
        update={"engine_bin": engine_bin, "results_retention": timedelta(seconds=1)}
    )
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.csv").write_text("a,b\n1,2\n")

    async def run() -> str:
        outcome = await run_embedded(
            build_job_request(source=str(source), task="csv-header"),
            settings,
            engine_url=None,
            progress=JobProgress(enabled=False),
            output=None,
            want_errors=False,
        )
        assert outcome.job["status"] == "completed", outcome.job["error"]
        job_id: str = outcome.job["id"]
        return job_id

    first = await run()
    assert (settings.jobs_dir / first).is_dir()
    # Finished more than the retention ago: the next run removes it.
    await finished_ago(settings, first, timedelta(seconds=5))
    second = await run()
    assert not (settings.jobs_dir / first).exists()
    assert (settings.jobs_dir / second).is_dir()  # its own results stay


async def test_the_worker_sweeps_when_it_starts(db_settings: Settings, engine_url: str) -> None:
    import asyncio

    from pravah.worker import Worker

    settings = db_settings
    await migrate(settings)
    db = Database(settings)
    stop = asyncio.Event()
    try:
        old = await _add(db, settings, status=JobStatus.completed, finished_days_ago=31)
        # What a server stopped mid-upload two days ago left.
        cut_off = settings.uploads_dir / "22222222-2222-2222-2222-222222222222"
        cut_off.mkdir(parents=True)
        (cut_off / ".big.zip.part").write_bytes(b"PK")
        two_days_ago = (utcnow() - timedelta(days=2)).timestamp()
        for path in (cut_off / ".big.zip.part", cut_off):
            os.utime(path, (two_days_ago, two_days_ago))
        worker = Worker(settings, [engine_url], db=db)
        running = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            if not _has_results(old) and not cut_off.exists():
                break
            await asyncio.sleep(0.05)
        assert not _has_results(old)
        assert not cut_off.exists()
        stop.set()
        await asyncio.wait_for(running, 30)
    finally:
        stop.set()
        await db.dispose()


async def test_a_worker_stopped_mid_sweep_lets_the_sweep_end_its_step(
    db_settings: Settings, engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled inside a query, the sweep made asyncpg open a connection to
    cancel it, which could outlive the event loop and end as an unclosed
    socket at some later garbage collection; a worker stopped while it
    sweeps now lets the sweep finish its step."""
    import asyncio

    from pravah import retention
    from pravah.worker import Worker

    started = asyncio.Event()
    ended: list[str] = []

    async def slow_prune(*_: object) -> int:
        started.set()
        await asyncio.sleep(0.3)
        ended.append("swept")
        return 0

    monkeypatch.setattr(retention, "prune_results", slow_prune)
    await migrate(db_settings)
    db = Database(db_settings)
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(Worker(db_settings, [engine_url], db=db).run(stop))
        await asyncio.wait_for(started.wait(), 30)
        stop.set()
        await asyncio.wait_for(running, 30)
        assert ended == ["swept"]
    finally:
        stop.set()
        await db.dispose()
