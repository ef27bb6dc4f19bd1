"""The schedules resource: recurring jobs (pravah.schedules)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from pravah import schedules as service
from pravah.api.deps import CapabilitiesDep, OperatorDep, SessionDep, ViewerDep
from pravah.models import ScheduleCreate, SchedulePublic

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_schedule(
    _caller: OperatorDep,
    data: ScheduleCreate,
    session: SessionDep,
    capabilities: CapabilitiesDep,
    response: Response,
) -> SchedulePublic:
    """Validate and store a schedule; 201 with its Location."""
    row = await service.create_schedule(session, data, capabilities)
    response.headers["Location"] = f"/schedules/{row.id}"
    return SchedulePublic.from_row(row)


@router.get("")
async def list_schedules(_caller: ViewerDep, session: SessionDep) -> list[SchedulePublic]:
    """Every schedule with its last and next run."""
    return [SchedulePublic.from_row(r) for r in await service.list_schedules(session)]


@router.get("/{schedule_id}")
async def get_schedule(_caller: ViewerDep, schedule_id: str, session: SessionDep) -> SchedulePublic:
    """One schedule."""
    return SchedulePublic.from_row(await service.get_schedule(session, schedule_id))


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(_caller: OperatorDep, schedule_id: str, session: SessionDep) -> None:
    """Remove a schedule; the jobs it started stay."""
    await service.delete_schedule(session, schedule_id)


@router.post("/{schedule_id}/pause")
async def pause_schedule(
    _caller: OperatorDep, schedule_id: str, session: SessionDep
) -> SchedulePublic:
    """Stop firing until resumed."""
    return SchedulePublic.from_row(await service.set_paused(session, schedule_id, True))


@router.post("/{schedule_id}/resume")
async def resume_schedule(
    _caller: OperatorDep, schedule_id: str, session: SessionDep
) -> SchedulePublic:
    """Fire again, from the next tick on."""
    return SchedulePublic.from_row(await service.set_paused(session, schedule_id, False))
