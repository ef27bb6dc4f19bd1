"""Fault injection with real processes and real PostgreSQL: a worker SIGKILLed
mid-job, 200 jobs over three worker instances and two engines, and a
PostgreSQL restart mid-job (a throwaway cluster of the test's own).

Jobs are tiny so each test runs in seconds; the lease is short (2 s) so a
takeover is quick.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Cli, free_port
from pravah import chunks
from pravah.db import Database, migrate
from pravah.engine_client import EngineClient
from pravah.engine_launcher import LocalEngineSync
from pravah.jobs import create_job
from pravah.models import Job, JobClaim, JobCreate
from pravah.results import iter_jsonl, load_parts
from pravah.runner import workspace_of
from pravah.settings import Settings
from pravah.worker import Worker
from sqlmodel import col, select

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

FAST_LEASE = {
    "PRAVAH_LEASE_TIMEOUT": "2",
    "PRAVAH_HEARTBEAT_INTERVAL": "0.3",
    "PRAVAH_POLL_INTERVAL": "0.2",
    "PRAVAH_PROGRESS_PERSIST_INTERVAL": "0.2",
    "PRAVAH_RETRY_BACKOFF": "0",
    "LOG_LEVEL": "INFO",
}


def _tree(root: Path, files: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        folder = root / f"d{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:05d}.csv").write_text(f"c{i % 4},x\n1,2\n")
    return root


@pytest.fixture
def engines(engine_bin: Path) -> Iterator[list[str]]:
    """Two engines, as a deployment with two engine pods has."""
    with (
        LocalEngineSync(engine_bin, start_timeout=30) as a,
        LocalEngineSync(engine_bin, start_timeout=30) as b,
    ):
        yield [a, b]


def _worker_env(settings: Settings, engines: list[str], **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "PRAVAH_STATE_DIR": str(settings.state_dir),
        "PRAVAH_ENGINE_URLS": ",".join(engines),
        **FAST_LEASE,
        **extra,
    }


async def _create(db: Database, engine_url: str, source: Path, count: int = 1) -> list[Job]:
    async with EngineClient(engine_url) as client:
        caps = await client.capabilities()
    out = []
    async with db.session() as session:
        for _ in range(count):
            out.append(
                await create_job(session, JobCreate(source=str(source), task="csv-header"), caps)
            )
    return out


async def _job(db: Database, job_id: str) -> Job:
    async with db.session() as session:
        job = await session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


async def _until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _claims(db: Database) -> list[JobClaim]:
    async with db.session() as session:
        stmt = select(JobClaim).order_by(col(JobClaim.job_id), col(JobClaim.claimed_at))
        return list((await session.exec(stmt)).all())


def assert_never_held_twice(claims: list[JobClaim]) -> None:
    """No two claims of one job overlap: each ends before the next begins."""
    by_job: dict[str, list[JobClaim]] = {}
    for claim in claims:
        by_job.setdefault(claim.job_id, []).append(claim)
    for job_id, rows in by_job.items():
        for earlier, later in itertools.pairwise(rows):
            assert earlier.released_at is not None, f"job {job_id} claimed twice at once"
            assert earlier.released_at <= later.claimed_at, f"job {job_id}: overlapping claims"


def _result_paths(settings: Settings, job_id: str) -> list[str]:
    workspace = workspace_of(settings, job_id)
    return [json.loads(line)["path"] for line in iter_jsonl(load_parts(workspace) or [], workspace)]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def test_sigkill_of_a_worker_mid_job_hands_it_to_another_after_the_lease(
    cli: Cli, pg_settings: Settings, engines: list[str], tmp_path: Path
) -> None:
    settings = pg_settings.model_copy(update={"state_dir": cli.state_dir})
    await migrate(settings)
    db = Database(settings)
    env = _worker_env(settings, engines, PRAVAH_CHUNK_FILES="10", PRAVAH_ENGINE_WINDOW="1")
    source = _tree(tmp_path / "src", 3000)
    first = cli.popen("worker", log=tmp_path / "w1.log", extra_env=env)
    second: subprocess.Popen[str] | None = None
    try:
        (job,) = await _create(db, engines[0], source)

        async def claimed_by_first() -> bool:
            row = await _job(db, job.id)
            return row.worker_id is not None and f":{first.pid}:" in row.worker_id

        await _until(claimed_by_first, 30, "the first worker to claim the job")
        second = cli.popen("worker", log=tmp_path / "w2.log", extra_env=env)

        async def some_chunks_done() -> bool:
            return any(r.status == "done" for r in await chunks.load(db, job.id))

        await _until(some_chunks_done, 30, "a first checkpoint")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        before = {r.idx: r.updated_at for r in await chunks.load(db, job.id) if r.status == "done"}
        assert 0 < len(before) < 300, "the job must be cut mid-way"

        async def finished() -> bool:
            return (await _job(db, job.id)).status in {"completed", "failed"}

        await _until(finished, 60, "the second worker to finish the job")
        final = await _job(db, job.id)
        assert final.status == "completed", final.error
        assert final.attempts == 2
        assert time.monotonic() - killed_at >= 1.0  # it waited for the lease to expire
        assert final.worker_id is not None and f":{second.pid}:" in final.worker_id
        claims = await _claims(db)
        assert [c.outcome for c in claims] == ["lease_expired", "completed"]
        assert_never_held_twice(claims)
        after = {r.idx: r.updated_at for r in await chunks.load(db, job.id)}
        assert all(after[i] == t for i, t in before.items())  # finished chunks were not redone
        paths = _result_paths(settings, job.id)
        assert len(paths) == 3000 and len(set(paths)) == 3000
    finally:
        for process in (first, second):
            if process is not None:
                _stop(process)
        await db.dispose()


async def test_200_jobs_over_three_workers_and_two_engines_each_complete_exactly_once(
    cli: Cli, pg_settings: Settings, engines: list[str], tmp_path: Path
) -> None:
    settings = pg_settings.model_copy(update={"state_dir": cli.state_dir})
    await migrate(settings)
    db = Database(settings)
    env = _worker_env(settings, engines, PRAVAH_WORKER_CONCURRENCY="4")
    source = _tree(tmp_path / "src", 2)
    workers = [cli.popen("worker", log=tmp_path / f"w{i}.log", extra_env=env) for i in range(3)]
    try:
        jobs = await _create(db, engines[0], source, count=200)
        ids = {j.id for j in jobs}

        async def all_finished() -> bool:
            async with db.session() as session:
                rows = (await session.exec(select(Job.status))).all()
            return all(s in {"completed", "failed", "cancelled"} for s in rows)

        await _until(all_finished, 120, "200 jobs to finish")
        async with db.session() as session:
            rows = list((await session.exec(select(Job))).all())
        assert {r.id for r in rows} == ids
        assert all(r.status == "completed" for r in rows), [r.error for r in rows if r.error]
        assert all(r.attempts == 1 and r.files_done == 2 for r in rows)
        claims = await _claims(db)
        assert sorted(c.job_id for c in claims) == sorted(ids)  # exactly one claim each
        assert all(c.outcome == "completed" and c.released_at for c in claims)
        assert_never_held_twice(claims)
        assert len({c.worker_id for c in claims}) == 3  # every instance took a share
    finally:
        for process in workers:
            _stop(process)
        await db.dispose()


# ------------------------------------------------------- PostgreSQL restart


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"{name} not found under /usr/lib/postgresql/*/bin", pytrace=False)
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture
def throwaway_pg() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL cluster of this test's own (initdb, own port, temp dir)."""
    base = Path(tempfile.mkdtemp(prefix="pravah-pg-"))
    data = base / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w"]
    subprocess.run(
        _as_postgres([*pg_ctl, "start"]),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", base
    finally:
        subprocess.run(
            _as_postgres([*pg_ctl, "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(base, ignore_errors=True)


async def test_a_postgresql_restart_mid_job_loses_nothing(
    throwaway_pg: tuple[str, Path],
    engine_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, base = throwaway_pg
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=url,
        chunk_files=5,
        engine_window=1,
        poll_interval=0.1,
        heartbeat_interval=0.3,
        progress_persist_interval=0.1,
        lease_timeout=30,
        retry_backoff=0,
    )
    original = EngineClient.process

    async def slow_process(self: EngineClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in original(self, *args, **kwargs):
            await asyncio.sleep(0.05)
            yield event

    monkeypatch.setattr(EngineClient, "process", slow_process)
    await migrate(settings)
    db = Database(settings)
    source = _tree(tmp_path / "src", 150)
    stop = asyncio.Event()
    run: asyncio.Task[None] | None = None
    try:
        (job,) = await _create(db, engine_url, source)
        run = asyncio.create_task(Worker(settings, [engine_url], db=db).run(stop))

        async def some_chunks_done() -> bool:
            return any(r.status == "done" for r in await chunks.load(db, job.id))

        await _until(some_chunks_done, 30, "a first checkpoint")
        data = base / "data"
        log = str(base / "log")
        restart = [_pg_bin("pg_ctl"), "-D", str(data), "-l", log, "-m", "fast", "-w", "restart"]
        # No pipes: the new server would inherit them and keep them open.
        await asyncio.to_thread(
            subprocess.run,
            _as_postgres(restart),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def finished() -> bool:
            try:
                return (await _job(db, job.id)).status in {"completed", "failed"}
            except Exception:
                return False

        await _until(finished, 60, "the job to finish after the restart")
        final = await _job(db, job.id)
        assert final.status == "completed", final.error
        assert final.files_done == 150
        paths = _result_paths(settings, job.id)
        assert len(paths) == 150 and len(set(paths)) == 150
        assert_never_held_twice(await _claims(db))
    finally:
        stop.set()
        if run is not None:
            await asyncio.wait_for(run, 15)
        await db.dispose()
