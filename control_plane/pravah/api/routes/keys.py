"""API keys: create, list, revoke (admins), and who the caller is (any key).

A key's text is in the response of `POST /keys` only; listings show its id,
name, owner, role and dates, never the key or its hash.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pravah import auth
from pravah.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from pravah.models import ApiKey, no_nul
from pravah.units import parse_datetime

router = APIRouter(prefix="/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """What an admin sends to create a key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    role: auth.Role = auth.Role.viewer
    owner: str | None = Field(
        default=None, min_length=1, max_length=200, description="Owner of its jobs (default: name)."
    )
    expires_at: datetime | None = Field(default=None, description="ISO 8601; null: never.")

    _text = field_validator("name", "owner")(no_nul)


class KeyPublic(BaseModel):
    """A key as listed: never its text or hash."""

    id: str
    name: str
    owner: str
    role: auth.Role
    status: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyPublic:
        """The public view of a stored key."""
        return cls(
            id=row.id,
            name=row.name,
            owner=row.owner,
            role=auth.Role(row.role),
            status=auth.key_status(row),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


class KeyCreated(KeyPublic):
    """The new key, with its text: shown this once."""

    key: str


class KeyList(BaseModel):
    """Every key, newest first."""

    items: list[KeyPublic]


class Me(BaseModel):
    """The caller: its key, owner and role (the dashboard hides what the role cannot do)."""

    key_id: str
    name: str
    owner: str
    role: auth.Role
    auth: bool


@router.get("/me")
async def whoami(caller: ViewerDep, settings: SettingsDep) -> Me:
    """Who the presented key belongs to."""
    return Me(
        key_id=caller.key_id,
        name=caller.name,
        owner=caller.owner,
        role=caller.role,
        auth=settings.auth_enabled,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(_caller: AdminDep, data: KeyCreate, session: SessionDep) -> KeyCreated:
    """Create a key; its text is in this response only."""
    expires = parse_datetime(data.expires_at) if data.expires_at else None
    row, text = await auth.create_key(
        session, name=data.name, role=data.role, owner=data.owner, expires_at=expires
    )
    return KeyCreated(**KeyPublic.from_row(row).model_dump(), key=text)


@router.get("")
async def list_keys(_caller: AdminDep, session: SessionDep) -> KeyList:
    """Every key (metadata only)."""
    return KeyList(items=[KeyPublic.from_row(r) for r in await auth.list_keys(session)])


@router.delete("/{key_id}")
async def revoke_key(_caller: AdminDep, key_id: str, session: SessionDep) -> KeyPublic:
    """Revoke a key at once (idempotent)."""
    return KeyPublic.from_row(await auth.revoke_key(session, key_id))
