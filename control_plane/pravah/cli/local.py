"""Commands that start local processes: `serve`, `engine` and `tasks`.

Why together: each one only assembles settings and hands over to a long-lived
component (uvicorn with the API app, the engine binary, a short-lived engine
for its capabilities); none of them touches the job store directly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from pravah.cli.common import (
    EXIT_USAGE,
    configure_cli_logging,
    fail,
    handle_errors,
    load_settings,
    out_console,
)
from pravah.cli.params import JsonOutput
from pravah.cli.render import dump_json, render_tasks_table

if TYPE_CHECKING:
    from pravah.settings import Settings

__all__ = ["engine_command", "serve_command", "tasks_command"]


def serve_command(
    host: Annotated[
        str, typer.Option("--host", envvar="PRAVAH_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", envvar="PRAVAH_PORT", min=0, max=65535, help="TCP port (0: any)."),
    ] = 8000,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            envvar="PRAVAH_ALLOW_UNAUTHENTICATED",
            help="Serve on a non-loopback address even though no key can authenticate "
            "(PRAVAH_AUTH=off, or no PRAVAH_ADMIN_KEY and no stored key).",
        ),
    ] = False,
) -> None:
    """Run the REST API, the job worker and (unless PRAVAH_ENGINE_URLS is set) a local engine.

    With PRAVAH_TLS_CERT_FILE and PRAVAH_TLS_KEY_FILE it serves HTTPS only.
    """
    with handle_errors():
        settings = load_settings()
        from pravah.log import configure_logging

        configure_logging(settings.log_level)
        if not allow_unauthenticated:
            check_exposure(settings, host)
        check_listen(host, port)
        # The app migrates on start too (a no-op then); done here first, a
        # store that cannot be reached is one line, not uvicorn's traceback.
        from pravah.db import migrate

        asyncio.run(migrate(settings))
        import uvicorn

        from pravah.api.app import create_app

        app = create_app(settings)

        # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises
        # the signal it caught with the previous handler in place. A stop
        # requested by a signal is the normal end of a server, so both
        # previous handlers end the process with status 0.
        def _stop(signum: int, frame: object) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        tls: dict[str, Any] = {}
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            tls = {
                "ssl_certfile": str(settings.tls_cert_file),
                "ssl_keyfile": str(settings.tls_key_file),
            }
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, **tls)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip("[]").lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def check_listen(host: str, port: int) -> None:
    """Fail now, in one line, when the server could not listen on `host`:`port`.

    uvicorn would find out only after the store and the engine had started,
    and say it as one JSON log line among theirs. A bind that succeeds here is
    closed at once (with SO_REUSEADDR, as uvicorn binds), so it is a check,
    not a reservation; port 0 always works.
    """
    import errno
    import socket

    where = f"{host}:{port}"
    # The address family uvicorn binds: IPv6 for a host with a colon.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        fail(f"--host {host!r} is not an address or name this machine knows ({exc.strerror})")
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                why = {
                    errno.EADDRINUSE: "the port is in use (another pravah serve?); "
                    "choose another with --port",
                    errno.EACCES: "ports below 1024 need privileges; use e.g. --port 8000",
                    errno.EADDRNOTAVAIL: "that address is not one of this machine's; "
                    "use --host 127.0.0.1 or 0.0.0.0",
                }.get(exc.errno or 0, exc.strerror or str(exc))
                fail(f"cannot listen on {where}: {why}")


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve a non-loopback address when no caller could authenticate.

    PRAVAH_AUTH=off there would open the API (and every allowed file) to the
    network; auth on with no admin key and no stored key would lock everyone
    out. `--allow-unauthenticated` overrides, for a deliberate choice.
    """
    if is_loopback(host):
        return
    if not settings.auth_enabled:
        fail(
            f"refusing to serve {host} with PRAVAH_AUTH=off: anyone who reaches it could run "
            "jobs on this machine's files. Listen on 127.0.0.1, turn auth on, or pass "
            "--allow-unauthenticated if that is really intended",
            EXIT_USAGE,
        )
    if settings.admin_key is not None:
        return
    if not asyncio.run(_has_active_keys(settings)):
        fail(
            f"refusing to serve {host}: there is no API key yet. Set PRAVAH_ADMIN_KEY "
            "(or PRAVAH_ADMIN_KEY_FILE), or create one with `pravah keys create --role admin`",
            EXIT_USAGE,
        )


async def _has_active_keys(settings: Settings) -> bool:
    from pravah.auth import has_active_keys
    from pravah.db import Database, migrate

    await migrate(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            return await has_active_keys(session)
    finally:
        await db.dispose()


def engine_command(
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            envvar="PRAVAH_ENGINE_LISTEN",
            help="Address to listen on (host:port; port 0 picks a free one).",
        ),
    ] = "127.0.0.1:50051",
) -> NoReturn:
    """Run the Rust engine in the foreground (replaces this process)."""
    with handle_errors():
        from pravah.engine_launcher import find_engine_bin

        binary = find_engine_bin(load_settings())
        sys.stdout.flush()
        sys.stderr.flush()
        # exec, not a child: signals, exit status and stdout are the engine's own.
        os.execv(binary, [str(binary), "--listen", listen])  # noqa: S606 - intended
    raise typer.Exit(1)  # pragma: no cover - only reached when handle_errors swallowed


async def fetch_capabilities(engine_url: str | None) -> dict[str, Any]:
    """The capabilities (as served by GET /config) of ``engine_url`` or a short-lived engine.

    Without ``--engine`` the first of PRAVAH_ENGINE_URLS is asked; with none
    configured a local engine is started for the question and stopped after.
    """
    from pravah.engine_client import EngineClient
    from pravah.engine_launcher import LocalEngine

    settings = load_settings()

    async def ask(url: str) -> dict[str, Any]:
        async with EngineClient.from_settings(url, settings) as client:
            capabilities = await client.capabilities()
        return capabilities.to_dict()

    url = engine_url or (settings.engine_urls[0] if settings.engine_urls else None)
    if url:
        return await ask(url)
    async with LocalEngine.from_settings(settings) as local_url:
        return await ask(local_url)


def tasks_command(
    json_output: JsonOutput = False,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            metavar="URL",
            help="Ask this engine (host:port) instead of starting one "
            "(default: first of PRAVAH_ENGINE_URLS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the engine's tasks and their options."""
    with handle_errors():
        configure_cli_logging(load_settings())
        capabilities = asyncio.run(fetch_capabilities(engine))
        if json_output:
            dump_json(capabilities)
            return
        version = capabilities.get("engine_version")
        if version:
            out_console.print(f"engine {version}")
        render_tasks_table(out_console, capabilities.get("tasks", []))
