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
request is validated when the schedule is created exactly as `POST /jobs`
validates a job (pravah.jobs.check_request: tasks, pipeline, options,
allowed roots and buckets, destination, uploads of the caller's owner); at
each tick its paths are checked again against the current settings, so a
narrowed PRAVAH_ALLOWED_ROOTS also stops old schedules. Runs of a schedule
with `incremental` use the schedule as their lineage unless one is named.

Ownership is that of jobs: a schedule belongs to the owner of the key that
made it, other owners get 404 for it (admins see all), and the jobs it
fires belong to its owner.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Any

from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped]
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah import metrics, queue
from pravah.engine_client import Capabilities
from pravah.errors import InvalidRequestError, NotFoundError
from pravah.jobs import check_paths, check_request, new_job, resolve_source
from pravah.log import get_logger
from pravah.models import Job, JobCreate, Schedule, ScheduleCreate, utcnow
from pravah.settings import Settings

log = get_logger(__name__)


def next_tick(cron: str, after: datetime) -> datetime:
    """The first tick of `cron` strictly after `after` (UTC)."""
    try:
        value: datetime = croniter(cron, after).get_next(datetime)
    except CroniterBadDateError as exc:  # '0 0 31 2 *'
        raise InvalidRequestError(
            f"cron expression {cron!r} matches no date, so it would never run", field="cron"
        ) from exc
    except (ValueError, KeyError) as exc:
        raise InvalidRequestError(f"invalid cron expression {cron!r}: {exc}", field="cron") from exc
    return value


def check_cron(cron: str) -> None:
    """Standard five-field cron (or an alias such as '@daily'). croniter
    also reads a sixth field as seconds: '* * * * * *', a typo away from
    '* * * * *', would queue a job every heartbeat."""
    if not croniter.is_valid(cron):
        raise InvalidRequestError(
            f"invalid cron expression {cron!r}; e.g. '0 3 * * *' (03:00 UTC daily)",
            field="cron",
        )
    fields = cron.split()
    if not cron.strip().startswith("@") and len(fields) != 5:
        raise InvalidRequestError(
            f"cron expression {cron!r} has {len(fields)} fields; give 5 (minute hour "
            "day-of-month month day-of-week, in UTC), e.g. '0 3 * * *'",
            field="cron",
        )


async def create_schedule(
    session: AsyncSession,
    data: ScheduleCreate,
    capabilities: Capabilities,
    *,
    settings: Settings | None = None,
    owner: str | None = None,
    owner_filter: str | None = None,
) -> Schedule:
    """Validate the cron expression and the job request, then store the schedule.

    `settings`, `owner` and `owner_filter` mean what they mean for
    pravah.jobs.create_job: the schedule and its jobs belong to `owner`.
    """
    check_cron(data.cron)
    schedule_id = str(uuid.uuid4())
    request = _with_lineage(data.job, schedule_id)
    check_request(request, capabilities, settings, owner_filter)
    now = utcnow()
    tasks = "+".join(step.task for step in request.steps())
    row = Schedule(
        id=schedule_id,
        name=data.name or f"{tasks} {request.source} {data.cron}"[:200],
        cron=data.cron,
        job=request.model_dump(mode="json"),
        next_run_at=next_tick(data.cron, now),
        created_at=now,
        owner=owner,
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


def _with_lineage(request: JobCreate, schedule_id: str) -> JobCreate:
    """An incremental request without a lineage gets the schedule's own."""
    if request.incremental != "off" and not request.lineage:
        return request.model_copy(update={"lineage": f"schedule-{schedule_id}"})
    return request


async def get_schedule(
    session: AsyncSession, schedule_id: str, owner: str | None = None
) -> Schedule:
    """The schedule with this id, or NotFoundError (also for another `owner`'s)."""
    row = await session.get(Schedule, schedule_id, populate_existing=True)
    if row is None or (owner is not None and row.owner != owner):
        raise NotFoundError(f"no schedule with id {schedule_id!r}")
    return row


async def list_schedules(session: AsyncSession, owner: str | None = None) -> list[Schedule]:
    """Every schedule (of `owner`, when given), by next run."""
    stmt = select(Schedule)
    if owner is not None:
        stmt = stmt.where(col(Schedule.owner) == owner)
    stmt = stmt.order_by(col(Schedule.next_run_at), col(Schedule.id))
    return list((await session.exec(stmt)).all())


async def delete_schedule(
    session: AsyncSession, schedule_id: str, owner: str | None = None
) -> None:
    """Remove a schedule (its past jobs stay)."""
    row = await get_schedule(session, schedule_id, owner)
    await session.delete(row)
    await session.commit()


async def set_paused(
    session: AsyncSession, schedule_id: str, paused: bool, owner: str | None = None
) -> Schedule:
    """Pause or resume; a resumed schedule fires at its next tick from now."""
    row = await get_schedule(session, schedule_id, owner)
    row.paused = paused
    if not paused:
        row.next_run_at = next_tick(row.cron, utcnow())
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


def _job_from(schedule: Schedule, tick: datetime, settings: Settings | None) -> Job:
    """The job of one tick, its paths checked again (against `settings` when given)."""
    request = _with_lineage(JobCreate.model_validate(schedule.job), schedule.id)
    if settings is not None:
        source, destination = check_paths(request, settings)
    else:
        source, destination = resolve_source(request.source), request.destination
    job = new_job(
        request,
        source,
        destination,
        owner=schedule.owner,
        created_at=tick if tick > schedule.created_at else None,
    )
    job.schedule_id = schedule.id
    return job


async def _fire(
    session: AsyncSession,
    schedule_id: str,
    tick: datetime,
    now: datetime,
    cron: str,
    job: Job | None,
) -> bool:
    """Claims `tick` of the schedule and stores its job (if any) in one
    transaction; False when another instance fired it first."""
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
    if (await conn.execute(claim)).rowcount != 1:
        await session.rollback()
        return False
    if job is not None:
        session.add(job)
    await session.commit()
    return True


async def fire_due(
    session: AsyncSession, now: datetime | None = None, settings: Settings | None = None
) -> list[str]:
    """Create the jobs of every due tick this instance wins; return their ids."""
    now = now or utcnow()
    stmt = select(Schedule).where(col(Schedule.paused).is_(False), col(Schedule.next_run_at) <= now)
    due = list((await session.exec(stmt)).all())
    plans: list[tuple[str, datetime, str, Job | None]] = []
    for schedule in due:  # plain values first: a rollback below expires the rows
        try:
            job: Job | None = _job_from(schedule, schedule.next_run_at, settings)
        except Exception as exc:  # its source vanished, ...: skip this tick, keep the schedule
            log.warning("schedule cannot fire", schedule_id=schedule.id, error=str(exc))
            job = None
        plans.append((schedule.id, schedule.next_run_at, schedule.cron, job))
    fired: list[str] = []
    for schedule_id, tick, cron, job in plans:
        try:
            won = await _fire(session, schedule_id, tick, now, cron, job)
        except DBAPIError as exc:
            await session.rollback()
            if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
                raise  # the store itself is unwell: every tick waits for the next heartbeat
            # The store refused this job's data: skip this tick, not the others.
            log.error("schedule's job could not be stored", schedule_id=schedule_id, error=str(exc))
            with contextlib.suppress(DBAPIError):
                await _fire(session, schedule_id, tick, now, cron, None)
            continue
        if won and job is not None:
            metrics.job_created(job.task)
            fired.append(job.id)
    if fired:
        await queue.notify(session)
    return fired
