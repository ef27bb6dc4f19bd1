"""FastAPI dependencies as `Annotated` aliases (the full-stack template's way)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.api.state import AppState
from pravah.engine_client import Capabilities
from pravah.settings import Settings


def get_state(request: Request) -> AppState:
    """The AppState the lifespan stored on the app."""
    state: AppState = request.app.state.pravah
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_app_settings(state: StateDep) -> Settings:
    """The settings the app was created with."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A DB session per request."""
    async with state.db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_capabilities(state: StateDep) -> Capabilities:
    """The engine's capabilities (cached; 503 when no engine answers)."""
    return await state.get_capabilities()


CapabilitiesDep = Annotated[Capabilities, Depends(get_capabilities)]
