"""Which unfinished jobs and which schedules still need an upload.

Why: deleting an upload that a pending or running job reads (or writes
into), or that a schedule will read at its next tick, would turn a user's
delete into a failed job later, far from its cause. The delete is refused
instead, naming what holds the upload, so the user cancels or deletes that
first. Finished jobs do not hold it: their results stay in the job store.
Holders the caller may not see (an admin's job on an operator's upload)
are counted, not named: a job id is not the caller's to learn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.models import Job, JobStatus, Schedule
from pravah.uploads import local_path_of


def names_folder(text: object, folder: Path) -> bool:
    """Whether the stored job path `text` is `folder` or lies inside it."""
    path = local_path_of(text, "path") if isinstance(text, str) else None
    return path is not None and path.is_relative_to(folder)


async def holders(session: AsyncSession, folder: Path, owner: str | None) -> list[str]:
    """'job <id>' and 'schedule <name>' for each unfinished job and each
    schedule whose source or destination is in `folder`, at most ten, then
    'N other users' jobs or schedules' for those not of `owner` (None: the
    caller sees everything)."""
    named: list[tuple[str | None, str, object, object]] = []
    jobs = await session.exec(
        select(Job.owner, Job.id, Job.source, Job.destination).where(
            col(Job.status).in_([JobStatus.pending, JobStatus.running])
        )
    )
    named += [(who, f"job {job_id}", source, dest) for who, job_id, source, dest in jobs]
    schedules = await session.exec(select(Schedule.owner, Schedule.name, Schedule.job))
    for who, name, request in schedules:
        spec: dict[str, Any] = request if isinstance(request, dict) else {}
        named.append((who, f"schedule {name!r}", spec.get("source"), spec.get("destination")))
    # Resolving paths touches the file system: off the event loop.
    held = await asyncio.to_thread(_in_folder, named, folder)
    shown = [label for who, label in held if owner is None or who == owner][:10]
    hidden = sum(1 for who, _ in held if owner is not None and who != owner)
    if hidden:
        shown.append(f"{hidden} other user's job(s) or schedule(s)")
    return shown


def _in_folder(
    named: list[tuple[str | None, str, object, object]], folder: Path
) -> list[tuple[str | None, str]]:
    folder = folder.resolve()
    return [
        (who, label)
        for who, label, source, destination in named
        if names_folder(source, folder) or names_folder(destination, folder)
    ]
