"""Schedules: REST lifecycle, and each tick fired exactly once across instances."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pravah import schedules
from pravah.db import Database, migrate
from pravah.errors import InvalidRequestError
from pravah.models import Job, Schedule, utcnow
from pravah.settings import Settings
from sqlmodel import select


async def test_schedules_are_created_listed_paused_resumed_and_deleted(
    api_no_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = api_no_worker
    body = {"cron": "0 3 * * *", "job": {"source": str(tmp_path), "task": "csv-header"}}
    created = await api.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["next_run_at"].endswith(("03:00:00Z", "03:00:00+00:00"))
    assert schedule["last_run_at"] is None and not schedule["paused"]
    listed = (await api.get("/schedules")).json()
    assert [s["id"] for s in listed] == [schedule["id"]]
    paused = await api.post(f"/schedules/{schedule['id']}/pause")
    assert paused.json()["paused"] is True
    resumed = await api.post(f"/schedules/{schedule['id']}/resume")
    assert resumed.json()["paused"] is False
    assert (await api.delete(f"/schedules/{schedule['id']}")).status_code == 204
    assert (await api.get(f"/schedules/{schedule['id']}")).status_code == 404
    bad = await api.post("/schedules", json={**body, "cron": "61 * * * *"})
    assert bad.status_code == 422 and "cron" in bad.text
    # Seconds (a sixth field croniter accepts) would queue a job every heartbeat.
    every_second = await api.post("/schedules", json={**body, "cron": "* * * * * *"})
    assert every_second.status_code == 422
    assert "has 6 fields; give 5" in every_second.json()["detail"]
    never = await api.post("/schedules", json={**body, "cron": "0 0 31 2 *"})
    assert never.status_code == 422
    assert "matches no date, so it would never run" in never.json()["detail"]
    nul = await api.post("/schedules", json={**body, "name": "a\x00b"})
    assert nul.status_code == 422 and "must not contain a NUL character" in nul.text
    daily = await api.post("/schedules", json={**body, "cron": "@daily"})
    assert daily.status_code == 201, daily.text
    assert (await api.get("/schedules")).json() == [daily.json()]  # nothing else was stored


async def test_a_due_tick_fires_exactly_once_across_instances(
    db_settings: Settings, tmp_path: Path
) -> None:
    await migrate(db_settings)
    instances = [Database(db_settings) for _ in range(4)]
    try:
        tick = utcnow() - timedelta(seconds=1)
        async with instances[0].session() as session:
            row = Schedule(
                name="nightly",
                cron="0 3 * * *",
                job={"source": str(tmp_path), "task": "csv-header", "incremental": "stat"},
                next_run_at=tick,
                created_at=tick - timedelta(days=1),
            )
            session.add(row)
            await session.commit()
            schedule_id = row.id

        async def fire(db: Database) -> list[str]:
            async with db.session() as session:
                return await schedules.fire_due(session)

        fired = await asyncio.gather(*(fire(db) for db in instances))
        assert sum(len(f) for f in fired) == 1
        async with instances[0].session() as session:
            jobs = (await session.exec(select(Job))).all()
            after = await session.get(Schedule, schedule_id, populate_existing=True)
        assert len(jobs) == 1 and jobs[0].schedule_id == schedule_id
        assert jobs[0].lineage == f"schedule-{schedule_id}"  # incremental runs share a lineage
        assert after is not None and after.last_run_at == tick
        assert after.last_job_id == jobs[0].id and after.next_run_at > utcnow()
        assert [await fire(db) for db in instances] == [[], [], [], []]  # not due any more
    finally:
        for db in instances:
            await db.dispose()


def test_next_tick_reads_cron_in_utc_and_rejects_nonsense() -> None:
    start = utcnow().replace(hour=4, minute=0, second=0, microsecond=0)
    nxt = schedules.next_tick("0 3 * * *", start)
    assert (nxt.hour, nxt.minute) == (3, 0) and nxt > start
    with pytest.raises(InvalidRequestError):
        schedules.next_tick("every day", start)


async def test_a_schedule_keeps_an_age_so_each_run_counts_back_from_itself(
    api_no_worker: httpx.AsyncClient, db_settings: Settings, tmp_path: Path
) -> None:
    api = api_no_worker
    """`--older-than 1d` on a nightly schedule must mean a day before each run,
    not a day before the schedule was made: the age is stored, not a date."""
    body = {
        "cron": "0 3 * * *",
        "job": {"source": str(tmp_path), "task": "csv-header", "filters": {"min_age": "1d"}},
    }
    created = await api.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["job"]["filters"]["min_age"] == "P1D"
    assert schedule["job"]["filters"]["modified_before"] is None
    db = Database(db_settings)
    try:
        async with db.session() as session:
            row = await session.get(Schedule, schedule["id"])
            assert row is not None
            row.next_run_at = utcnow() - timedelta(seconds=1)
            session.add(row)
            await session.commit()
            assert len(await schedules.fire_due(session)) == 1
            job = (await session.exec(select(Job))).one()
        assert job.filters == {"min_age": "P1D"}
    finally:
        await db.dispose()
    bad = await api.post(
        "/schedules", json={**body, "job": {**body["job"], "filters": {"min_age": "1y"}}}
    )
    assert bad.status_code == 422 and "invalid age '1y'" in bad.text


async def test_a_schedule_whose_job_cannot_be_stored_skips_its_tick_and_not_the_others(
    db_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL in a stored job's lineage (accepted before it was refused; on
    PostgreSQL no job can hold it) and a job the store refuses for any other
    reason each skip their own tick; every other due schedule still fires."""
    await migrate(db_settings)
    db = Database(db_settings)
    tick = utcnow() - timedelta(seconds=1)
    plain = {"source": str(tmp_path), "task": "csv-header"}
    rows = {
        "nul": Schedule(
            name="nul",
            cron="* * * * *",
            job={**plain, "lineage": "x\x00y", "incremental": "stat"},
            next_run_at=tick,
        ),
        "refused": Schedule(name="refused", cron="* * * * *", job=plain, next_run_at=tick),
        "victim": Schedule(name="victim", cron="* * * * *", job=plain, next_run_at=tick),
    }
    job_from = schedules._job_from

    def unstorable(schedule: Schedule, *args: object) -> Job:
        job = job_from(schedule, *args)  # type: ignore[arg-type]
        if schedule.name == "refused":
            job.source = None  # type: ignore[assignment]  # NOT NULL in every store
        return job

    monkeypatch.setattr(schedules, "_job_from", unstorable)
    try:
        async with db.session() as session:
            session.add_all(rows.values())
            await session.commit()
            ids = {name: row.id for name, row in rows.items()}
            fired = await schedules.fire_due(session)
            jobs = (await session.exec(select(Job))).all()
            assert [j.schedule_id for j in jobs] == [ids["victim"]] and fired == [jobs[0].id]
            for name in ids:
                after = await session.get(Schedule, ids[name], populate_existing=True)
                assert after is not None and after.next_run_at > utcnow(), name
            assert await schedules.fire_due(session) == []  # nothing due any more
    finally:
        await db.dispose()
