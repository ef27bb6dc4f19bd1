"""FastAPI dependencies as `Annotated` aliases (the full-stack template's way).

Access control lives here, declared per route by the alias a route takes:

    async def create_job(caller: OperatorDep, ...)   # operator or admin
    async def list_jobs(caller: ViewerDep, ...)      # any valid key
    async def create_key(caller: AdminDep, ...)      # admin only

`RequireRole` authenticates the bearer key (401 when missing or wrong),
checks the role (403) and hands the route a `Principal`, whose
`owner_filter` the service layer uses so that other owners' jobs are 404.
A whole router can be guarded with `dependencies=[Depends(require(...))]`.
`tests/unit/test_access_matrix.py` walks every route of the app and fails
for any route without a guard that is not on its explicit public list, so a
new endpoint cannot ship unprotected by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.api.state import AppState
from pravah.auth import ANONYMOUS_ADMIN, Principal, Role
from pravah.engine_client import Capabilities
from pravah.errors import AuthenticationError, PermissionDeniedError
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


# Declares the scheme in OpenAPI (the "Authorize" button of /docs); the
# guard below does the checking so that errors keep the API's error shape.
_bearer = HTTPBearer(auto_error=False, description="An API key: `pravah keys create`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class RequireRole:
    """Dependency: the caller's Principal if its key has at least `role`.

    `public_when(settings)` returning True skips the check (used for
    /metrics, public unless PRAVAH_METRICS_PUBLIC=false).
    """

    def __init__(self, role: Role, public_when: Callable[[Settings], bool] | None = None) -> None:
        self.role = role
        self.public_when = public_when

    def __repr__(self) -> str:
        return f"RequireRole({self.role.value})"

    async def __call__(
        self, request: Request, state: StateDep, session: SessionDep, bearer: BearerDep
    ) -> Principal:
        settings = state.settings
        if not settings.auth_enabled or (self.public_when and self.public_when(settings)):
            return ANONYMOUS_ADMIN
        if bearer is None or bearer.scheme.lower() != "bearer" or not bearer.credentials:
            raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>'")
        principal = await state.verifier.authenticate(session, bearer.credentials)
        if not principal.role.allows(self.role):
            raise PermissionDeniedError(
                f"this needs the {self.role.value} role; the key {principal.key_id} "
                f"is {principal.role.value}"
            )
        request.state.principal = principal
        return principal


_GUARDS = {role: RequireRole(role) for role in Role}


def require(role: Role) -> RequireRole:
    """The shared guard of `role` (for router-level `dependencies=[Depends(...)]`)."""
    return _GUARDS[role]


ViewerDep = Annotated[Principal, Depends(require(Role.viewer))]
OperatorDep = Annotated[Principal, Depends(require(Role.operator))]
AdminDep = Annotated[Principal, Depends(require(Role.admin))]
MetricsGuard = RequireRole(Role.viewer, public_when=lambda s: s.metrics_public)


def route_guards(dependant: Any) -> list[RequireRole]:
    """Every RequireRole in a route's dependency tree (for the access-matrix test)."""
    found: list[RequireRole] = []
    stack = [dependant]
    while stack:
        node = stack.pop()
        if isinstance(node.call, RequireRole):
            found.append(node.call)
        stack.extend(node.dependencies)
    return found


# Where a page starts. Bounded so the database never sees a number past its
# 64-bit integers: offset=99999999999999999999 was a 500 from SQLite.
OffsetQuery = Annotated[int, Query(ge=0, le=2**53, description="Items to skip (at most 2^53).")]
