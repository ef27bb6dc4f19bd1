"""Changes to the job store that only time would make, for tests.

Why a module: making a job look finished long ago (to expire its results)
is needed by the retention tests and by the browser test of the page that
says so; one place writes the row the way the store keeps it.
"""

from __future__ import annotations

from datetime import timedelta

from pravah.db import Database
from pravah.models import Job, utcnow
from pravah.settings import Settings


async def finished_ago(settings: Settings, job_id: str, ago: timedelta) -> None:
    """Moves job `job_id`'s finish time `ago` before now."""
    db = Database(settings)
    try:
        async with db.session() as session:
            job = await session.get(Job, job_id)
            assert job is not None, f"no job {job_id}"
            job.finished_at = utcnow() - ago
            session.add(job)
            await session.commit()
    finally:
        await db.dispose()
