"""Chunk checkpoints, several engines, retries, cancel, timeout and panics,
with real engines (in-process runner and worker)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pravah import chunks, queue
from pravah.db import Database, migrate
from pravah.engine_client import EngineClient
from pravah.engine_launcher import LocalEngineSync
from pravah.engine_pool import ChunkOutcome
from pravah.errors import ConflictError
from pravah.jobs import create_job
from pravah.models import Job, JobChunk, JobCreate, utcnow
from pravah.results import iter_jsonl, load_parts
from pravah.runner import run_job, workspace_of
from pravah.settings import Settings
from pravah.worker import Worker
from sqlmodel import select

PANIC_NAME = "__pravah_test_panic__"


def _tree(root: Path, files: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        folder = root / f"d{i % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:04d}.csv").write_text(f"c{i % 3},x\n1,2\n")
    return root


async def _job(db: Database, engine_url: str, source: Path, **fields: Any) -> Job:
    async with EngineClient(engine_url) as client:
        caps = await client.capabilities()
    async with db.session() as session:
        return await create_job(
            session, JobCreate(source=str(source), task="csv-header", **fields), caps
        )


async def _rows(db: Database, job_id: str) -> list[JobChunk]:
    return await chunks.load(db, job_id)


def _result_paths(settings: Settings, job_id: str) -> list[str]:
    workspace = workspace_of(settings, job_id)
    parts = load_parts(workspace) or []
    return [json.loads(line)["path"] for line in iter_jsonl(parts, workspace)]


async def _wait_status(db: Database, job_id: str, wanted: set[str], within: float = 30) -> Job:
    deadline = time.monotonic() + within
    while True:
        async with db.session() as session:
            job = await session.get(Job, job_id, populate_existing=True)
        assert job is not None
        if job.status in wanted:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stayed {job.status} ({job.error}), wanted {wanted}")
        await asyncio.sleep(0.05)


def _record_engine_calls(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """From now on: the work ids sent to Process, and the engines asked to List."""
    processed: list[str] = []
    listed: list[str] = []
    original_process = EngineClient.process
    original_list = EngineClient.list_to_chunks

    async def counting_process(
        self: EngineClient, task: str, work: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        items = list(work)
        processed.extend(w.id for w in items)
        async for event in original_process(self, task, items, **kwargs):
            yield event

    async def counting_list(self: EngineClient, *args: Any, **kwargs: Any) -> Any:
        listed.append(self.url)
        return await original_list(self, *args, **kwargs)

    monkeypatch.setattr(EngineClient, "process", counting_process)
    monkeypatch.setattr(EngineClient, "list_to_chunks", counting_list)
    return processed, listed


@pytest.fixture
def chunked(db_settings: Settings) -> Settings:
    """Small chunks (10 files) so a small tree has many checkpoints."""
    return db_settings.model_copy(update={"chunk_files": 10, "retry_backoff": 0.0})


async def test_a_resumed_job_redoes_only_unfinished_chunks_and_lists_once(
    chunked: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path / "src", 120)
    await migrate(chunked)
    db = Database(chunked)
    original_mark = chunks.mark_finished
    finished: list[str] = []

    async def crash_after_three(db_: Database, job_id: str, outcome: ChunkOutcome) -> Any:
        if len(finished) >= 3:
            raise RuntimeError("simulated crash while recording a checkpoint")
        finished.append(outcome.work_id)
        return await original_mark(db_, job_id, outcome)

    try:
        job = await _job(db, engine_url, source)
        monkeypatch.setattr(chunks, "mark_finished", crash_after_three)
        first = await run_job(job.id, chunked, engine_url, db=db)
        assert first.status == "pending", first.error  # transient: queued for a retry
        assert first.run_after is not None
        assert "attempt 1 of 3 failed" in (first.error or "")
        rows = await _rows(db, job.id)
        assert len(rows) == 12
        done_first = {chunks.work_id(r.idx) for r in rows if r.status == "done"}
        # A checkpoint write cut short by the crash is simply not recorded.
        assert done_first and done_first <= set(finished)
        chunk_files = sorted((workspace_of(chunked, job.id) / "chunks").iterdir())

        monkeypatch.setattr(chunks, "mark_finished", original_mark)
        processed, listed = _record_engine_calls(monkeypatch)
        final = await run_job(job.id, chunked, engine_url, db=db)
        assert final.status == "completed", final.error
        assert listed == []  # the listing of the first attempt was reused
        assert sorted((workspace_of(chunked, job.id) / "chunks").iterdir()) == chunk_files
        all_ids = {chunks.work_id(r.idx) for r in rows}
        assert set(processed) == all_ids - done_first
        assert len(processed) == len(set(processed))
        assert final.files_done == 120
        paths = _result_paths(chunked, job.id)
        assert len(paths) == 120 and len(set(paths)) == 120  # each file exactly once
        assert final.summary is not None
        assert final.summary["files"] == 120
        assert sum(s["files"] for s in final.summary["schemas"]) == 120
        assert final.summary["distinct_schemas"] == 3
    finally:
        await db.dispose()


# The second step's own field in its result lines; inventory is listed
# without sizes (size-independent), hash with them.
SECOND_STEPS = {"hash": ({"algorithm": "sha256"}, "algorithm"), "inventory": ({}, "extension")}


@pytest.mark.parametrize("second", sorted(SECOND_STEPS))
async def test_a_resumed_pipeline_skips_finished_steps_and_redoes_only_unfinished_chunks(
    chunked: Settings,
    engine_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    second: str,
) -> None:
    options, field = SECOND_STEPS[second]
    source = _tree(tmp_path / "src", 60)
    dest = tmp_path / "dest"
    await migrate(chunked)
    db = Database(chunked)
    original_mark = chunks.mark_finished
    step2_started: list[str] = []
    step2_done: list[str] = []
    two_recorded = asyncio.Event()

    async def crash_in_step_two(db_: Database, job_id: str, outcome: ChunkOutcome) -> Any:
        if not outcome.work_id.startswith("s2-"):
            return await original_mark(db_, job_id, outcome)
        if len(step2_started) >= 2:
            # Chunks finish concurrently: let the first two checkpoints land
            # before crashing, so which ones are recorded is known.
            await two_recorded.wait()
            raise RuntimeError("simulated crash while recording a step-2 checkpoint")
        step2_started.append(outcome.work_id)
        row = await original_mark(db_, job_id, outcome)
        step2_done.append(outcome.work_id)
        if len(step2_done) == 2:
            two_recorded.set()
        return row

    try:
        async with EngineClient(engine_url) as client:
            caps = await client.capabilities()
        async with db.session() as session:
            job = await create_job(
                session,
                JobCreate(
                    source=str(source),
                    pipeline=[
                        {"task": "compress", "options": {"format": "gzip"}},
                        {"task": second, "options": options},
                    ],
                    destination=str(dest),
                ),
                caps,
            )
        monkeypatch.setattr(chunks, "mark_finished", crash_in_step_two)
        first = await run_job(job.id, chunked, engine_url, db=db)
        assert first.status == "pending", first.error  # transient: queued for a retry
        rows = await chunks.load(db, job.id, step=None)
        step1 = [r for r in rows if r.step == 1]
        step2 = [r for r in rows if r.step == 2]
        assert step1 and all(r.status == "done" for r in step1)
        assert {chunks.work_id(r.idx, 2) for r in step2 if r.status == "done"} == set(step2_done)
        # The first step's outputs stay in the workspace for the retry.
        scratch = workspace_of(chunked, job.id) / "steps" / "1"
        assert len(list(scratch.rglob("*.gz"))) == 60

        monkeypatch.setattr(chunks, "mark_finished", original_mark)
        processed, listed = _record_engine_calls(monkeypatch)
        final = await run_job(job.id, chunked, engine_url, db=db)
        assert final.status == "completed", final.error
        assert listed == []  # neither step was listed again
        all_step2 = {chunks.work_id(r.idx, 2) for r in step2}
        assert sorted(processed) == sorted(all_step2 - set(step2_done))
        hashed = [
            json.loads(line)
            for line in iter_jsonl(
                load_parts(workspace_of(chunked, job.id)) or [], workspace_of(chunked, job.id)
            )
        ]
        hashed_gz = [h["path"] for h in hashed if h["path"].endswith(".gz") and field in h]
        assert len(hashed_gz) == 60 and len(set(hashed_gz)) == 60  # each output seen once
        # The resumed step's byte total is its listing's: unknown (not zero)
        # when it was listed without sizes.
        if second == "inventory":
            assert final.bytes_total is None
        else:
            assert final.bytes_total is not None and final.bytes_total > 0
        assert not (workspace_of(chunked, job.id) / "steps").exists()  # scratch gone at the end
    finally:
        await db.dispose()


async def test_chunks_are_spread_over_every_engine(
    chunked: Settings, engine_url: str, engine_bin: Path, tmp_path: Path
) -> None:
    source = _tree(tmp_path / "src", 200)
    await migrate(chunked)
    db = Database(chunked)
    try:
        with LocalEngineSync(engine_bin, start_timeout=30) as second:
            job = await _job(db, engine_url, source)
            final = await run_job(job.id, chunked, [engine_url, second], db=db)
            assert final.status == "completed", final.error
            rows = await _rows(db, job.id)
            assert {r.engine for r in rows} == {engine_url, second}
            assert all(r.status == "done" for r in rows)
            paths = _result_paths(chunked, job.id)
            assert len(paths) == 200 and len(set(paths)) == 200
    finally:
        await db.dispose()


async def test_a_job_of_two_chunks_uses_both_engines_even_with_room_for_two_on_one(
    db_settings: Settings, engine_url: str, engine_bin: Path, tmp_path: Path
) -> None:
    settings = db_settings.model_copy(update={"chunk_files": 10, "engine_window": 4})
    source = _tree(tmp_path / "src", 20)
    await migrate(settings)
    db = Database(settings)
    try:
        with LocalEngineSync(engine_bin, start_timeout=30) as second:
            job = await _job(db, engine_url, source)
            final = await run_job(job.id, settings, [engine_url, second], db=db)
            assert final.status == "completed", final.error
            rows = await _rows(db, job.id)
            assert len(rows) == 2
            assert sorted(r.engine or "" for r in rows) == sorted([engine_url, second])
    finally:
        await db.dispose()


async def test_an_unreachable_engine_is_skipped(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"chunk_files": 10})
    source = _tree(tmp_path / "src", 40)
    await migrate(settings)
    db = Database(settings)
    try:
        job = await _job(db, engine_url, source)
        final = await run_job(job.id, settings, ["127.0.0.1:1", engine_url], db=db)
        assert final.status == "completed", final.error
        assert {r.engine for r in await _rows(db, job.id)} == {engine_url}
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_sigkill_of_one_engine_mid_job_moves_its_chunks_and_keeps_each_output_once(
    pg_settings: Settings, engine_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pg_settings.model_copy(update={"chunk_files": 10, "engine_window": 2})
    source = _tree(tmp_path / "src", 400)
    await migrate(settings)
    db = Database(settings)
    victim = LocalEngineSync(engine_bin, start_timeout=30)
    survivor = LocalEngineSync(engine_bin, start_timeout=30)
    original_mark = chunks.mark_finished
    killed: list[float] = []

    async def kill_on_first_victim_chunk(db_: Database, job_id: str, outcome: ChunkOutcome) -> Any:
        row = await original_mark(db_, job_id, outcome)
        if outcome.engine == victim.url and not killed:
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(time.monotonic())
        return row

    monkeypatch.setattr(chunks, "mark_finished", kill_on_first_victim_chunk)
    try:
        with victim as victim_url, survivor as survivor_url:
            job = await _job(db, survivor_url, source)
            final = await run_job(job.id, settings, [victim_url, survivor_url], db=db)
            assert killed, "the victim engine never finished a chunk"
            assert final.status == "completed", final.error
            rows = await _rows(db, job.id)
            assert all(r.status == "done" for r in rows)
            assert any(r.engine == victim_url for r in rows)  # its finished work was kept
            assert sum(r.files_done for r in rows) == 400
            paths = _result_paths(settings, job.id)
            assert len(paths) == 400 and len(set(paths)) == 400
            assert final.files_done == 400 and final.files_failed == 0
    finally:
        await db.dispose()


async def test_a_poisoned_file_is_recorded_and_healthy_jobs_complete(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    poisoned = _tree(tmp_path / "poisoned", 30)
    (poisoned / PANIC_NAME).write_text("a,b\n")
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        bad = await _job(db, engine_url, poisoned)
        healthy = [await _job(db, engine_url, _tree(tmp_path / f"ok{i}", 20)) for i in range(3)]
        stop = asyncio.Event()
        run = asyncio.create_task(Worker(db_settings, [engine_url], db=db).run(stop))
        for job in healthy:
            final = await _wait_status(db, job.id, {"completed", "failed"})
            assert final.status == "completed", final.error
        final = await _wait_status(db, bad.id, {"completed", "failed"})
        stop.set()
        await asyncio.wait_for(run, 10)
        assert final.status == "completed", final.error
        assert final.files_done == 31 and final.files_failed == 1
        workspace = workspace_of(db_settings, bad.id)
        lines = [json.loads(x) for x in iter_jsonl(load_parts(workspace) or [], workspace)]
        errors = [x for x in lines if x.get("error")]
        assert [(e["path"], e["error_kind"]) for e in errors] == [(PANIC_NAME, "internal")]
        assert "panicked" in errors[0]["error"]
    finally:
        await db.dispose()


def _slow(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    original = EngineClient.process

    async def slow_process(self: EngineClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in original(self, *args, **kwargs):
            await asyncio.sleep(seconds)
            yield event

    monkeypatch.setattr(EngineClient, "process", slow_process)


async def test_cancel_stops_a_running_job_within_a_second_and_keeps_finished_chunks(
    db_settings: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = db_settings.model_copy(update={"chunk_files": 5, "engine_window": 1})
    source = _tree(tmp_path / "src", 100)
    await migrate(settings)
    db = Database(settings)
    _slow(monkeypatch, 0.3)
    try:
        job = await _job(db, engine_url, source)
        run = asyncio.create_task(run_job(job.id, settings, [engine_url, engine_url], db=db))
        for _ in range(200):  # until the first chunk is done
            if any(r.status == "done" for r in await _rows(db, job.id)):
                break
            await asyncio.sleep(0.05)
        async with db.session() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.cancel_requested = True
            session.add(row)
            await session.commit()
        asked = time.monotonic()
        final = await asyncio.wait_for(run, 10)
        assert final.status == "cancelled"
        assert time.monotonic() - asked < 1.5
        rows = await _rows(db, job.id)
        done = {chunks.work_id(r.idx) for r in rows if r.status == "done"}
        assert done and len(done) < len(rows)
        results = workspace_of(settings, job.id) / "results"
        owners = {p.name.rsplit("-", 1)[0].removeprefix("part-") for p in results.iterdir()}
        assert owners == done  # finished outputs stay, partial ones are gone
        assert final.results_available
        assert len(_result_paths(settings, job.id)) == sum(r.files_done for r in rows)
    finally:
        await db.dispose()


async def test_a_job_past_its_timeout_fails_without_retry(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sqlite_settings.model_copy(update={"chunk_files": 5})
    await migrate(settings)
    db = Database(settings)
    _slow(monkeypatch, 0.5)
    try:
        job = await _job(db, engine_url, _tree(tmp_path / "src", 50), timeout=0.5)
        final = await run_job(job.id, settings, engine_url, db=db)
        assert final.status == "failed"
        assert "timed out after 0.5 s" in (final.error or "")
        assert final.attempts == 1
    finally:
        await db.dispose()


async def test_a_permanent_error_fails_at_once_and_a_transient_one_is_retried_later(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        gone = tmp_path / "gone"
        gone.mkdir()
        permanent = await _job(db, engine_url, gone)
        gone.rmdir()
        final = await run_job(permanent.id, db_settings, engine_url, db=db)
        assert final.status == "failed" and final.attempts == 1
        assert final.run_after is None

        transient = await _job(db, engine_url, _tree(tmp_path / "src", 3), max_attempts=2)
        before = utcnow()
        first = await run_job(transient.id, db_settings, "127.0.0.1:1", db=db)
        assert first.status == "pending"
        assert first.run_after is not None and first.run_after > before
        assert "attempt 1 of 2 failed" in (first.error or "")
        # Not due yet: no worker claims it during its backoff.
        async with db.session() as session:
            assert await queue.claim_job(session, "w") is None
        second = await run_job(transient.id, db_settings, "127.0.0.1:1", db=db)
        assert second.status == "failed" and second.attempts == 2
        assert "after 2 attempts" in (second.error or "")
    finally:
        await db.dispose()


async def test_higher_priority_jobs_are_claimed_first_and_claims_are_recorded(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    await migrate(db_settings)
    db = Database(db_settings)
    try:
        low = await _job(db, engine_url, tmp_path)
        high = await _job(db, engine_url, tmp_path, priority=10)
        mid = await _job(db, engine_url, tmp_path, priority=5)
        order = []
        for _ in range(3):
            async with db.session() as session:
                order.append(await queue.claim_job(session, "w1"))
        assert order == [high.id, mid.id, low.id]
        from pravah.models import JobClaim

        async with db.session() as session:
            claims = (await session.exec(select(JobClaim))).all()
        assert sorted(c.job_id for c in claims) == sorted(order)
        assert all(c.worker_id == "w1" and c.attempt == 1 for c in claims)
    finally:
        await db.dispose()


async def test_incremental_runs_skip_unchanged_files_but_not_new_ones_with_old_mtimes(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    await migrate(sqlite_settings)
    db = Database(sqlite_settings)
    source = _tree(tmp_path / "logs", 5)
    try:

        async def nightly() -> Job:
            job = await _job(db, engine_url, source, lineage="nightly", incremental="stat")
            final = await run_job(job.id, sqlite_settings, engine_url, db=db)
            assert final.status == "completed", final.error
            return final

        first = await nightly()
        assert first.files_done == 5
        second = await nightly()  # nothing changed: last night's work is not redone
        assert second.files_done == 0
        assert second.listing is not None and second.listing["unchanged_skipped"] == 5
        copied = source / "d0" / "copied-in.csv"
        copied.write_text("old,file\n")
        os.utime(copied, (946684800, 946684800))  # an old mtime (2000-01-01)
        changed = next(source.glob("d1/*.csv"))
        changed.write_text("grown,header,x\n1,2,3\n")
        third = await nightly()
        assert third.files_done == 2
        assert sorted(_result_paths(sqlite_settings, third.id)) == sorted(
            [str(copied.relative_to(source)), str(changed.relative_to(source))]
        )
    finally:
        await db.dispose()


async def test_retry_failed_runs_exactly_the_failed_files(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    from pravah.jobs import create_retry_job

    await migrate(db_settings)
    db = Database(db_settings)
    source = _tree(tmp_path / "src", 6)
    (source / "d0" / "empty.csv").write_bytes(b"")
    (source / "d2" / "binary.csv").write_bytes(bytes(range(256)) * 4)
    try:
        job = await _job(db, engine_url, source)
        first = await run_job(job.id, db_settings, engine_url, db=db)
        assert first.status == "completed" and first.files_failed == 2

        async def retry_once() -> Job | str:
            async with db.session() as session:
                try:
                    return await create_retry_job(session, job.id, db_settings.jobs_dir)
                except ConflictError as exc:
                    return str(exc)

        # Ten at once (a double click, clients that repeat a request): one
        # retry job; the others are told which job is retrying it already.
        tries = await asyncio.gather(*(retry_once() for _ in range(10)))
        made = [t for t in tries if isinstance(t, Job)]
        assert len(made) == 1, tries
        retry = made[0]
        assert retry.retry_of == job.id
        told = f"job {job.id} is being retried already by job {retry.id} (pending)"
        assert [t for t in tries if not isinstance(t, Job)] == [told] * 9
        final = await run_job(retry.id, db_settings, engine_url, db=db)
        assert final.status == "completed", final.error
        assert final.files_total == 2 and final.files_done == 2
        assert sorted(_result_paths(db_settings, retry.id)) == ["d0/empty.csv", "d2/binary.csv"]
        again = await retry_once()  # once the retry ended, the job may be retried again
        assert isinstance(again, Job) and again.id != retry.id
    finally:
        await db.dispose()


async def test_chunks_are_processed_while_the_listing_is_still_open(
    chunked: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh job's first chunks run before its listing ends; the checkpoints
    (chunk rows and the job's listing) are still stored together, after it."""
    source = _tree(tmp_path / "src", 60)
    await migrate(chunked)
    db = Database(chunked)
    processed, _ = _record_engine_calls(monkeypatch)
    counting_process, counting_list = EngineClient.process, EngineClient.list_to_chunks
    ended: list[str] = []
    seen_while_open: list[tuple[int, Any]] = []

    async def ending_process(self: EngineClient, task: str, work: Any, **kw: Any) -> Any:
        items = list(work)
        async for event in counting_process(self, task, items, **kw):
            yield event
        ended.extend(w.id for w in items)

    async def held_open(self: EngineClient, *args: Any, **kwargs: Any) -> Any:
        result = await counting_list(self, *args, **kwargs)
        deadline = time.monotonic() + 30
        while not ended:  # the listing ends only once a chunk went through Process
            if time.monotonic() > deadline:
                pytest.fail("no chunk was processed while the listing was open")
            await asyncio.sleep(0.01)
        async with db.session() as session:
            row = await session.get(Job, job.id, populate_existing=True)
            assert row is not None
            seen_while_open.append((len(await _rows(db, job.id)), row.listing))
        return result

    monkeypatch.setattr(EngineClient, "process", ending_process)
    monkeypatch.setattr(EngineClient, "list_to_chunks", held_open)
    try:
        job = await _job(db, engine_url, source)
        final = await run_job(job.id, chunked, engine_url, db=db)
        assert final.status == "completed", final.error
        assert seen_while_open == [(0, None)]  # nothing checkpointed before the listing
        rows = await _rows(db, job.id)
        assert len(rows) == 6 and all(r.status == "done" for r in rows)
        assert sorted(processed) == sorted(chunks.work_id(r.idx) for r in rows)
        paths = _result_paths(chunked, job.id)
        assert len(paths) == 60 and len(set(paths)) == 60
        assert final.files_total == 60 and final.files_done == 60
    finally:
        await db.dispose()


async def test_a_crash_before_the_listing_is_stored_redoes_the_whole_job_once(
    chunked: Settings, engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks processed during the listing are not checkpoints until it is stored:
    when storing it fails, the retry lists and processes everything again, and
    no part file of the first attempt is counted (the engine may still finish
    writing one just after its call was cancelled; the retry clears them)."""
    source = _tree(tmp_path / "src", 50)
    await migrate(chunked)
    db = Database(chunked)
    original_record = chunks.record_listing

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash while storing the listing")

    try:
        job = await _job(db, engine_url, source)
        monkeypatch.setattr(chunks, "record_listing", crash)
        first = await run_job(job.id, chunked, engine_url, db=db)
        assert first.status == "pending", first.error
        assert first.listing is None
        assert await _rows(db, job.id) == []
        assert not first.results_available

        monkeypatch.setattr(chunks, "record_listing", original_record)
        processed, listed = _record_engine_calls(monkeypatch)
        final = await run_job(job.id, chunked, engine_url, db=db)
        assert final.status == "completed", final.error
        assert len(listed) == 1 and len(processed) == 5
        paths = _result_paths(chunked, job.id)
        assert len(paths) == 50 and len(set(paths)) == 50
        assert final.files_done == 50
    finally:
        await db.dispose()
