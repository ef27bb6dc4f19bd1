"""The schedules resource: recurring jobs (pravah.schedules).

Access: reading needs a viewer key, the rest an operator key; callers see
and change only their owner's schedules (admins all), others' are 404, and
the jobs a schedule fires belong to its owner.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from pravah import schedules as service
from pravah.api.deps import CapabilitiesDep, OperatorDep, SessionDep, SettingsDep, ViewerDep
from pravah.models import ScheduleCreate, SchedulePublic

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_schedule(
    caller: OperatorDep,
    data: ScheduleCreate,
    session: SessionDep,
    capabilities: CapabilitiesDep,
    settings: SettingsDep,
    response: Response,
) -> SchedulePublic:
    """Validate and store a schedule; 201 with its Location."""
    row = await service.create_schedule(
        session,
        data,
        capabilities,
        settings=settings,
        owner=caller.owner,
        owner_filter=caller.owner_filter,
    )
    response.headers["Location"] = f"/schedules/{row.id}"
    return SchedulePublic.from_row(row)


@router.get("")
async def list_schedules(caller: ViewerDep, session: SessionDep) -> list[SchedulePublic]:
    """The caller's schedules with their last and next run."""
    rows = await service.list_schedules(session, caller.owner_filter)
    return [SchedulePublic.from_row(r) for r in rows]


@router.get("/{schedule_id}")
async def get_schedule(caller: ViewerDep, schedule_id: str, session: SessionDep) -> SchedulePublic:
    """One schedule."""
    row = await service.get_schedule(session, schedule_id, caller.owner_filter)
    return SchedulePublic.from_row(row)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(caller: OperatorDep, schedule_id: str, session: SessionDep) -> None:
    """Remove a schedule; the jobs it started stay."""
    await service.delete_schedule(session, schedule_id, caller.owner_filter)


@router.post("/{schedule_id}/pause")
async def pause_schedule(
    caller: OperatorDep, schedule_id: str, session: SessionDep
) -> SchedulePublic:
    """Stop firing until resumed."""
    row = await service.set_paused(session, schedule_id, True, caller.owner_filter)
    return SchedulePublic.from_row(row)


@router.post("/{schedule_id}/resume")
async def resume_schedule(
    caller: OperatorDep, schedule_id: str, session: SessionDep
) -> SchedulePublic:
    """Fire again, from the next tick on."""
    row = await service.set_paused(session, schedule_id, False, caller.owner_filter)
    return SchedulePublic.from_row(row)
