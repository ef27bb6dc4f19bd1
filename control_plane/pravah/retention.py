"""Finished jobs' workspaces expire after PRAVAH_RESULTS_RETENTION.

Why: every job leaves its per-file results and listing chunks in
`state_dir/jobs/<id>`, and a nightly `pravah run` from cron or a schedule
makes a new one every night; nothing ever removed them (500,000 CSV headers
are some 50 MB a run). The job row, with its counts and summary, is kept:
only the workspace goes, and `results_removed_at` records when, so the API
can answer "removed" rather than "none".

The row is marked first, then the folder removed: a reader that sees the
row unmarked may find some part files gone (it skips missing parts), never
a row that promises results it cannot give. A folder outside the jobs
folder is never removed, whatever the row says. Sweeps are bounded
(`BATCH` jobs each), so a first sweep over years of jobs does not hold a
transaction open for long; the next sweep takes the rest.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime
from pathlib import Path

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.log import get_logger
from pravah.models import TERMINAL_STATUSES, Job
from pravah.settings import Settings

log = get_logger(__name__)

BATCH = 500


def removed(job_id: str, removed_at: datetime) -> str:
    """Why a job has no per-file results any more, for API and CLI messages."""
    return (
        f"job {job_id}'s per-file results were removed on {removed_at:%Y-%m-%d %H:%M} UTC, "
        "when they became older than PRAVAH_RESULTS_RETENTION; its counts and summary "
        "are still in the job"
    )


async def prune_results(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Removes the workspaces of jobs finished before `now` minus the
    retention (at most BATCH of them); returns how many jobs it expired."""
    if settings.results_retention is None:
        return 0
    cutoff = now - settings.results_retention
    rows = (
        await session.exec(
            select(Job.id, Job.workspace)
            .where(col(Job.finished_at) < cutoff)
            .where(col(Job.status).in_([s.value for s in TERMINAL_STATUSES]))
            .where(col(Job.results_removed_at).is_(None))
            .where(col(Job.workspace).is_not(None))
            .order_by(col(Job.finished_at))
            .limit(BATCH)
        )
    ).all()
    if not rows:
        return 0
    await session.exec(
        update(Job)
        .where(col(Job.id).in_([job_id for job_id, _ in rows]))
        .where(col(Job.results_removed_at).is_(None))
        .values(results_available=False, results_removed_at=now)
    )
    await session.commit()
    jobs_dir = settings.jobs_dir.resolve()
    await asyncio.to_thread(_remove_all, [Path(w) for _, w in rows if w], jobs_dir)
    log.info("expired job results", jobs=len(rows), before=cutoff.isoformat())
    return len(rows)


def _remove_all(workspaces: list[Path], jobs_dir: Path) -> None:
    for workspace in workspaces:
        try:
            resolved = workspace.resolve()
        except OSError:
            continue
        if resolved.parent != jobs_dir:
            log.warning("not removing a workspace outside the jobs folder", path=str(workspace))
            continue
        shutil.rmtree(resolved, onerror=_report)


def _report(_func: object, path: str, exc_info: tuple[type, BaseException, object]) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        log.warning("could not remove expired results", path=path, error=str(exc_info[1]))
