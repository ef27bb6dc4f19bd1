"""Recurring jobs: cron schedules fired exactly once per tick across instances.

Why in the database: every worker instance runs the same firing loop (in its
heartbeat), and the tick itself is the lock. An instance claims a due tick
with one conditional update, `UPDATE schedules SET next_run_at = :next ...
WHERE id = :id AND next_run_at = :tick AND NOT paused`; only the instance
whose update matched a row creates the job, in the same transaction, so a
tick fires exactly once even with many instances and even if one dies
between claiming and creating (the transaction then rolls back and the tick
is still due). Ticks missed while no instance ran fire once, not once each:
the next tick is computed from now.

Cron expressions are parsed by croniter and read in UTC. A schedule's job
request is validated once, when the schedule is created; runs of a schedule
with `incremental` use the schedule as their lineage unless one is named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah import metrics, queue
from pravah.engine_client import Capabilities
from pravah.errors import InvalidRequestError, NotFoundError
from pravah.jobs import get_task, resolve_source, validate_options
from pravah.log import get_logger
from pravah.models import Job, JobCreate, JobStatus, Schedule, ScheduleCreate, utcnow

log = get_logger(__name__)


def next_tick(cron: str, after: datetime) -> datetime:
    """The first tick of `cron` strictly after `after` (UTC)."""
    try:
        value: datetime = croniter(cron, after).get_next(datetime)
    except (ValueError, KeyError) as exc:
        raise InvalidRequestError(f"invalid cron expression {cron!r}: {exc}", field="cron") from exc
    return value


async def create_schedule(
    session: AsyncSession, data: ScheduleCreate, capabilities: Capabilities
) -> Schedule:
    """Validate the cron expression and the job request, then store the schedule."""
    if not croniter.is_valid(data.cron):
        raise InvalidRequestError(
            f"invalid cron expression {data.cron!r}; e.g. '0 3 * * *' (03:00 UTC daily)",
            field="cron",
        )
    request = data.job
    assert request.task is not None
    validate_options(get_task(capabilities, request.task), request.options)
    resolve_source(request.source)
    now = utcnow()
    row = Schedule(
        name=data.name or f"{request.task} {request.source} {data.cron}",
        cron=data.cron,
        job=request.model_dump(mode="json"),
        next_run_at=next_tick(data.cron, now),
        created_at=now,
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


async def get_schedule(session: AsyncSession, schedule_id: str) -> Schedule:
    """The schedule with this id, or NotFoundError."""
    row = await session.get(Schedule, schedule_id, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no schedule with id {schedule_id!r}")
    return row


async def list_schedules(session: AsyncSession) -> list[Schedule]:
    """Every schedule, by next run."""
    stmt = select(Schedule).order_by(col(Schedule.next_run_at), col(Schedule.id))
    return list((await session.exec(stmt)).all())


async def delete_schedule(session: AsyncSession, schedule_id: str) -> None:
    """Remove a schedule (its past jobs stay)."""
    row = await get_schedule(session, schedule_id)
    await session.delete(row)
    await session.commit()


async def set_paused(session: AsyncSession, schedule_id: str, paused: bool) -> Schedule:
    """Pause or resume; a resumed schedule fires at its next tick from now."""
    row = await get_schedule(session, schedule_id)
    row.paused = paused
    if not paused:
        row.next_run_at = next_tick(row.cron, utcnow())
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


def _job_from(schedule: Schedule, tick: datetime) -> Job:
    request = JobCreate.model_validate(schedule.job)
    lineage = request.lineage
    if request.incremental != "off" and not lineage:
        lineage = f"schedule-{schedule.id}"
    return Job(
        task=request.task or "",
        source=str(resolve_source(request.source)),
        destination=request.destination,
        encryption=request.encryption.model_dump() if request.encryption else None,
        options=request.options,
        filters=request.filters.model_dump(mode="json", exclude_defaults=True),
        status=JobStatus.pending.value,
        created_at=tick if tick > schedule.created_at else utcnow(),
        updated_at=utcnow(),
        priority=request.priority,
        max_attempts=request.max_attempts,
        timeout_seconds=request.timeout,
        lineage=lineage,
        incremental=request.incremental,
        schedule_id=schedule.id,
    )


async def fire_due(session: AsyncSession, now: datetime | None = None) -> list[str]:
    """Create the jobs of every due tick this instance wins; return their ids."""
    now = now or utcnow()
    stmt = select(Schedule).where(col(Schedule.paused).is_(False), col(Schedule.next_run_at) <= now)
    due = list((await session.exec(stmt)).all())
    plans: list[tuple[str, datetime, str, Job | None]] = []
    for schedule in due:  # plain values first: a rollback below expires the rows
        try:
            job: Job | None = _job_from(schedule, schedule.next_run_at)
        except Exception as exc:  # its source vanished, ...: skip this tick, keep the schedule
            log.warning("schedule cannot fire", schedule_id=schedule.id, error=str(exc))
            job = None
        plans.append((schedule.id, schedule.next_run_at, schedule.cron, job))
    fired: list[str] = []
    for schedule_id, tick, cron, job in plans:
        claim: Any = (
            update(Schedule)
            .where(
                col(Schedule.id) == schedule_id,
                col(Schedule.next_run_at) == tick,
                col(Schedule.paused).is_(False),
            )
            .values(
                next_run_at=next_tick(cron, max(tick, now)),
                last_run_at=tick,
                last_job_id=job.id if job is not None else None,
            )
        )
        conn = await session.connection()
        won = (await conn.execute(claim)).rowcount == 1
        if not won:  # another instance fired this tick
            await session.rollback()
            continue
        if job is not None:
            session.add(job)
        await session.commit()
        if job is not None:
            metrics.job_created(job.task)
            fired.append(job.id)
    if fired:
        await queue.notify(session)
    return fired
