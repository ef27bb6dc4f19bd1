"""Chunk checkpoints: one `job_chunks` row per listing chunk of a job.

Why: a job over a million files must survive any process dying without
starting over. The listing is written once (chunk files in the workspace);
its chunks are stored as rows (a few thousand files each, never one row per
file) together with the listing itself on the job row, in one transaction.
A chunk row becomes `done` only after its Process call ended with a summary,
recording its part files, counts and summary; so a resumed or retried job
redoes exactly the chunks not `done`. Before a chunk is redone its part
files from an interrupted try are deleted, so it replaces its partial
outputs instead of adding to them (outputs of writing tasks are atomic per
file and overwritten by the redo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from pravah.db import Database, retrying
from pravah.engine_client import ChunkInfo
from pravah.engine_pool import ChunkOutcome
from pravah.models import ChunkStatus, Job, JobChunk, utcnow
from pravah.results import Part


def work_id(idx: int, step: int = 1) -> str:
    """The engine work id of a chunk (names its part files)."""
    return f"chunk-{idx:06d}" if step == 1 else f"s{step}-chunk-{idx:06d}"


def parse_work_id(work: str) -> tuple[int, int]:
    """(step, idx) of a work id made by work_id()."""
    step = 1
    if work.startswith("s") and "-chunk-" in work:
        head, _, work = work.partition("-")
        step = int(head[1:])
    return step, int(work.rsplit("-", 1)[1])


@dataclass
class Totals:
    """Counters of the chunks already done."""

    files_done: int = 0
    files_failed: int = 0
    bytes_done: int = 0
    bytes_failed: int = 0


async def load(db: Database, job_id: str, step: int | None = 1) -> list[JobChunk]:
    """The job's chunk rows of one step (of every step with None), by step and index."""
    async with db.session() as session:
        stmt = select(JobChunk).where(JobChunk.job_id == job_id)
        if step is not None:
            stmt = stmt.where(JobChunk.step == step)
        stmt = stmt.order_by(col(JobChunk.step), col(JobChunk.idx))
        return list((await session.exec(stmt)).all())


async def record_listing(
    db: Database,
    job_id: str,
    listing: dict[str, Any],
    chunks: list[ChunkInfo],
    *,
    worker_id: str | None,
    step: int = 1,
) -> list[JobChunk]:
    """Store the chunk rows and the job's listing in one transaction.

    Fenced: when `worker_id` is given and the job is no longer this worker's
    (its lease was taken away), nothing is stored and PermissionError is raised.
    """
    now = utcnow()
    rows = [
        JobChunk(
            job_id=job_id,
            step=step,
            idx=c.index,
            uri=c.uri,
            files=c.files,
            bytes=c.bytes,
            status=ChunkStatus.pending.value,
            files_done=0,
            files_failed=0,
            bytes_done=0,
            bytes_failed=0,
            updated_at=now,
        )
        for c in chunks
    ]
    async with db.session() as session:
        job = await session.get(Job, job_id, populate_existing=True, with_for_update=True)
        if job is None:
            raise PermissionError(f"job {job_id} vanished")
        if worker_id is not None and job.worker_id != worker_id:
            raise PermissionError(f"job {job_id} is no longer held by {worker_id}")
        old = await session.exec(
            select(JobChunk).where(JobChunk.job_id == job_id, JobChunk.step == step)
        )
        for row in old.all():
            await session.delete(row)
        await session.flush()
        session.add_all(rows)
        if step == 1:  # the job's listing is its source's; later steps list scratch
            job.listing = listing
            job.files_total = listing.get("files")
            job.bytes_total = listing.get("bytes")
        job.updated_at = now
        session.add(job)
        await session.commit()
    return rows


async def mark_finished(db: Database, job_id: str, outcome: ChunkOutcome) -> JobChunk | None:
    """Record a finished chunk: done with its parts and summary, or failed with why.

    Retried while the database is away (a restart must not lose the chunk).
    """
    return await retrying(lambda: _mark_finished(db, job_id, outcome))


async def _mark_finished(db: Database, job_id: str, outcome: ChunkOutcome) -> JobChunk | None:
    step, idx = parse_work_id(outcome.work_id)
    async with db.session() as session:
        row = await session.get(JobChunk, (job_id, step, idx), populate_existing=True)
        if row is None:
            return None
        failed_as_whole = outcome.error is not None or outcome.error_message is not None
        row.status = (ChunkStatus.failed if failed_as_whole else ChunkStatus.done).value
        row.engine = outcome.engine[:200]
        row.parts = [
            {"path": b.part_uri, "files": b.files, "work_id": b.work_id, "sequence": b.sequence}
            for b in outcome.parts
        ]
        row.summary = outcome.summary
        totals = outcome.totals
        row.files_done = totals.files_done if totals else outcome.files
        row.files_failed = totals.files_failed if totals else outcome.failed
        row.bytes_done = totals.bytes_done if totals else outcome.bytes
        row.bytes_failed = totals.bytes_failed if totals else 0
        if outcome.error is not None:
            row.error = outcome.error.message
        elif outcome.error_message is not None:
            row.error = outcome.error_message
        row.updated_at = utcnow()
        session.add(row)
        await session.commit()
        return row


async def note_requeue(db: Database, job_id: str, work: str, engine: str, reason: str) -> None:
    """Count an engine failure against a chunk (it goes to another engine)."""
    await retrying(lambda: _note_requeue(db, job_id, work, engine, reason))


async def _note_requeue(db: Database, job_id: str, work: str, engine: str, reason: str) -> None:
    step, idx = parse_work_id(work)
    async with db.session() as session:
        row = await session.get(JobChunk, (job_id, step, idx), populate_existing=True)
        if row is None:
            return
        row.attempts += 1
        row.engine = engine[:200]
        row.error = reason
        row.updated_at = utcnow()
        session.add(row)
        await session.commit()


def remove_parts(results_dir: Path, work: str) -> int:
    """Delete the part files (and leftover temp files) of one chunk; return how many."""
    if not results_dir.is_dir():
        return 0
    removed = 0
    for path in list(results_dir.glob(f"part-{work}-*")) + list(
        results_dir.glob(f".part-{work}-*")
    ):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def totals_of(rows: list[JobChunk]) -> Totals:
    """Counters over the `done` and `failed` rows."""
    t = Totals()
    for row in rows:
        if row.status == ChunkStatus.pending.value:
            continue
        t.files_done += row.files_done
        t.files_failed += row.files_failed
        t.bytes_done += row.bytes_done
        t.bytes_failed += row.bytes_failed
    return t


def parts_of(rows: list[JobChunk]) -> list[Part]:
    """The part files of the finished chunks."""
    return [Part(**p) for row in rows if row.parts for p in row.parts]
