"""`pravah schedule ...`: recurring jobs on a server (REST /schedules)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pravah.cli.client import ApiClient
from pravah.cli.common import handle_errors, out_console
from pravah.cli.options import build_job_request
from pravah.cli.params import (
    DEFAULT_SERVER,
    ApiKey,
    CaFile,
    Destination,
    Exclude,
    Include,
    JsonOutput,
    MaxSize,
    MinSize,
    NewerThan,
    OlderThan,
    Server,
    Source,
    Task,
    TaskOption,
)
from pravah.cli.render import dump_json
from pravah.cli.visible import visible

schedule_app = typer.Typer(
    help="Recurring jobs: add, list, pause, resume, delete.", no_args_is_help=True
)

Incremental = Annotated[
    str,
    typer.Option(
        "--incremental",
        help="off, stat (new or changed path/size/mtime only) or hash (also content).",
    ),
]


def _show(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        state = "paused" if row.get("paused") else "active"
        out_console.print(
            visible(
                f"{row['id']}  {row['cron']:<15} {state:<6} next {row.get('next_run_at')}  "
                f"last {row.get('last_run_at') or '-'}  {row['name']}"
            )
        )


@schedule_app.command("add")
def add_command(
    cron: Annotated[str, typer.Argument(help="Cron expression in UTC, e.g. '0 3 * * *'.")],
    source: Source,
    task: Task,
    option: TaskOption = None,
    include: Include = None,
    exclude: Exclude = None,
    min_size: MinSize = None,
    max_size: MaxSize = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    dest: Destination = None,
    name: Annotated[str | None, typer.Option("--name", help="A name to show.")] = None,
    incremental: Incremental = "off",
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Run TASK over SOURCE at every tick of CRON."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        job = build_job_request(
            source=source,
            task=task or [],
            options=option or [],
            include=include or [],
            exclude=exclude or [],
            min_size=min_size,
            max_size=max_size,
            older_than=older_than,
            newer_than=newer_than,
            destination=dest,
            check_source=False,
        )
        job["incremental"] = incremental
        body: dict[str, Any] = {"cron": cron, "job": job}
        if name:
            body["name"] = name
        row: dict[str, Any] = api.request("POST", "/schedules", json=body)
        if json_output:
            dump_json(row)
        else:
            out_console.print(f"schedule {row['id']} added; next run {row['next_run_at']}")


@schedule_app.command("list")
def list_command(
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Schedules with their last and next run."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        rows: list[dict[str, Any]] = api.request("GET", "/schedules")
        if json_output:
            dump_json(rows)
        else:
            _show(rows)


def _action(
    method: str, path: str, server: str, json_output: bool, api_key: str | None, ca_file: str | None
) -> None:
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        row: Any = api.request(method, path)
        if json_output and row is not None:
            dump_json(row)
        elif row is not None:
            _show([row])


@schedule_app.command("pause")
def pause_command(
    schedule_id: Annotated[str, typer.Argument(help="Schedule id.")],
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Stop firing until resumed."""
    _action("POST", f"/schedules/{schedule_id}/pause", server, json_output, api_key, ca_file)


@schedule_app.command("resume")
def resume_command(
    schedule_id: Annotated[str, typer.Argument(help="Schedule id.")],
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Fire again from the next tick."""
    _action("POST", f"/schedules/{schedule_id}/resume", server, json_output, api_key, ca_file)


@schedule_app.command("delete")
def delete_command(
    schedule_id: Annotated[str, typer.Argument(help="Schedule id.")],
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Remove a schedule (its past jobs stay)."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        api.request("DELETE", f"/schedules/{schedule_id}")
        out_console.print(f"schedule {schedule_id} deleted")
