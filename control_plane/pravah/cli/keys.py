"""`pravah keys create|list|revoke`: API key management on the server's own store.

Why on the store and not over REST: the first admin key has to come from
somewhere; whoever can run commands with the server's DATABASE_URL already
controls it. (Admins can also manage keys over REST: `/keys`.) The key text
is printed once, on stdout, so `KEY=$(pravah keys create ...)` works.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pravah.cli.common import EXIT_USAGE, err_console, fail, handle_errors, load_settings
from pravah.cli.params import JsonOutput
from pravah.cli.render import dump_json
from pravah.cli.visible import visible

if TYPE_CHECKING:
    from pravah.settings import Settings

keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (roles: admin, operator, viewer).",
    no_args_is_help=True,
)


def parse_ttl(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w' as a timedelta."""
    from pravah.units import parse_duration

    try:
        ttl = parse_duration(text)
    except ValueError as exc:
        fail(f"--expires: {exc}; leave --expires out for a key that never expires", EXIT_USAGE)
    if ttl is None or ttl < timedelta(minutes=1):
        fail(f"invalid --expires {text!r}: use e.g. 90m, 12h, 30d or 2w", EXIT_USAGE)
    return ttl


async def _with_session(settings: Settings, action: Any) -> Any:
    from pravah.db import Database, migrate

    await migrate(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            return await action(session)
    finally:
        await db.dispose()


def _public(row: Any) -> dict[str, Any]:
    from pravah.auth import key_status

    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "role": row.role,
        "status": key_status(row),
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@keys_app.command("create")
def create_command(
    role: Annotated[
        str, typer.Option("--role", help="admin, operator or viewer.", show_default=True)
    ] = "viewer",
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "cli",
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner", help="Owner of the jobs it creates (default: --name).", show_default=False
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="Lifetime, e.g. 30d, 12h (default: never).", show_default=False
        ),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Create a key and print it once (only its salted hash is stored)."""
    with handle_errors():
        from pravah.auth import Role, create_key
        from pravah.models import utcnow

        try:
            parsed_role = Role(role)
        except ValueError:
            fail(f"unknown role {role!r}: use admin, operator or viewer", EXIT_USAGE)
        expires_at = utcnow() + parse_ttl(expires) if expires else None
        settings = load_settings()
        row, text = asyncio.run(
            _with_session(
                settings,
                lambda s: create_key(
                    s, name=name, role=parsed_role, owner=owner, expires_at=expires_at
                ),
            )
        )
        if json_output:
            dump_json({**_public(row), "key": text})
            return
        typer.echo(text)
        err_console.print(
            f"created {row.role} key {row.id} ({row.name}, owner {row.owner}); "
            "it is shown only now: store it safely"
        )


@keys_app.command("list")
def list_command(json_output: JsonOutput = False) -> None:
    """Every key: id, name, owner, role, status, dates (never the key)."""
    with handle_errors():
        from pravah.auth import list_keys

        rows = asyncio.run(_with_session(load_settings(), list_keys))
        items = [_public(r) for r in rows]
        if json_output:
            dump_json({"items": items})
            return
        from rich.table import Table

        from pravah.cli.common import out_console
        from pravah.cli.visible import data

        table = Table("id", "name", "owner", "role", "status", "created", "expires")
        for i in items:
            table.add_row(
                *(data(i[k]) for k in ("id", "name", "owner", "role", "status")),
                i["created_at"][:19],
                (i["expires_at"] or "never")[:19],
            )
        out_console.print(table)


@keys_app.command("revoke")
def revoke_command(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    with handle_errors():
        from pravah.auth import revoke_key

        row = asyncio.run(_with_session(load_settings(), lambda s: revoke_key(s, key_id)))
        err_console.print(visible(f"revoked key {row.id} ({row.name})"))
