"""API keys and roles: who a caller is and what it may do.

Why this shape:
- A key reads `pvh_<id>_<secret>`. The id (not secret) finds the row; only a
  salted scrypt hash of the secret is stored, so a leaked database does not
  leak usable keys. A key is shown once, when created.
- Roles are ordered: `viewer` (read own jobs) < `operator` (also create and
  cancel own jobs, uploads, dry runs) < `admin` (everything, every job, key
  management). Jobs belong to the key's `owner`; several keys may share one.
- The bootstrap admin key comes from settings (`PRAVAH_ADMIN_KEY` or
  `PRAVAH_ADMIN_KEY_FILE`): compared in constant time, never stored, so
  rotating the variable retires the old key at once.
- scrypt costs tens of milliseconds by design. A verified key's digest is
  remembered in memory (bounded), so each request after the first costs one
  primary-key lookup, which still sees revocation and expiry at once.

The REST layer (`pravah.api.deps`) and the CLI (`pravah keys`) both use this
module; neither hashes or compares keys itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pravah.errors import AuthenticationError, InvalidRequestError, NotFoundError
from pravah.models import ApiKey, utcnow

KEY_PREFIX = "pvh"
# scrypt cost: 16 MiB and ~30 ms per hash. Keys carry 256 random bits, so the
# hash guards against offline guessing of nothing weaker than that; the cost
# only has to be respectable, and the verified cache keeps requests fast.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024**2, "dklen": 32}
_CACHE_SIZE = 1024


class Role(StrEnum):
    """What a key may do; each role includes the ones before it."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        """0 for viewer, 1 for operator, 2 for admin."""
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """True when this role includes `needed`."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    key_id: str
    name: str
    owner: str
    role: Role

    @property
    def sees_all(self) -> bool:
        """Admins see every owner's jobs."""
        return self.role == Role.admin

    @property
    def owner_filter(self) -> str | None:
        """The owner whose jobs this caller may see; None means every job."""
        return None if self.sees_all else self.owner


# Who calls when auth is off (PRAVAH_AUTH=off) or in the embedded `pravah run`.
ANONYMOUS_ADMIN = Principal(key_id="-", name="auth disabled", owner="local", role=Role.admin)
ENV_ADMIN_ID = "env-admin"


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


def generate_key() -> tuple[str, str, str]:
    """A new key: (key id, secret, full key text)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key text, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyVerifier:
    """Checks presented keys; remembers digests of keys already verified."""

    def __init__(self, admin_key: str | None = None) -> None:
        self._admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
        # sha256(token) -> key id, least recently used first.
        self._verified: OrderedDict[bytes, str] = OrderedDict()

    async def authenticate(self, session: AsyncSession, token: str) -> Principal:
        """The principal of `token`; AuthenticationError when it is not a valid key."""
        digest = hashlib.sha256(token.encode()).digest()
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Principal(ENV_ADMIN_ID, "PRAVAH_ADMIN_KEY", "admin", Role.admin)
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationError("invalid API key")
        key_id, secret = parsed
        row = await session.get(ApiKey, key_id, populate_existing=True)
        if row is None:
            raise AuthenticationError("invalid API key")
        if self._verified.get(digest) == key_id:
            self._verified.move_to_end(digest)
        else:
            expected = bytes.fromhex(row.secret_hash)
            actual = bytes.fromhex(_hash(secret, bytes.fromhex(row.salt)))
            if not hmac.compare_digest(expected, actual):
                raise AuthenticationError("invalid API key")
            self._verified[digest] = key_id
            while len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        if row.revoked_at is not None:
            raise AuthenticationError(f"API key {key_id} was revoked")
        if row.expires_at is not None and row.expires_at <= utcnow():
            raise AuthenticationError(f"API key {key_id} expired")
        return Principal(row.id, row.name, row.owner, Role(row.role))


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    role: Role,
    owner: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key's hash; return the row and the key text (shown only now)."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise InvalidRequestError("key name must be 1-200 printable characters", field="name")
    owner = (owner or name).strip()
    if not owner or len(owner) > 200 or not owner.isprintable():
        raise InvalidRequestError("owner must be 1-200 printable characters", field="owner")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequestError("expires_at is in the past", field="expires_at")
    key_id, secret, text = generate_key()
    salt = secrets.token_bytes(16)
    row = ApiKey(
        id=key_id,
        name=name,
        owner=owner,
        role=role.value,
        salt=salt.hex(),
        secret_hash=_hash(secret, salt),
        expires_at=expires_at,
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row, text


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, newest first (hashes stay in the rows; callers show metadata only)."""
    stmt = select(ApiKey).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
    return list((await session.exec(stmt)).all())


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Mark a key revoked (idempotent); NotFoundError for unknown ids."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        await session.commit()
        await session.refresh(row)
    return row


async def has_active_keys(session: AsyncSession) -> bool:
    """True when at least one stored key is neither revoked nor expired."""
    now = utcnow()
    stmt = select(ApiKey.id).where(col(ApiKey.revoked_at).is_(None)).limit(100)
    for key_id in (await session.exec(stmt)).all():
        row = await session.get(ApiKey, key_id)
        if row is not None and (row.expires_at is None or row.expires_at > now):
            return True
    return False


def key_status(row: ApiKey, now: datetime | None = None) -> str:
    """active, revoked or expired."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"
