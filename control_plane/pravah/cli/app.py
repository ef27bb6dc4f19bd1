"""The `pravah` command: the Typer application and its command table.

Why this layout: each group of commands lives in its own small module
(`run` in-process, `serve`/`engine`/`tasks` for local processes, the REST
client commands in `client`), and this module only wires them together.
Heavy imports (SQLAlchemy, FastAPI, gRPC) happen inside the commands, so
`pravah --help` and `pravah --version` stay instant.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import Annotated

import typer
import typer.main
from typer import _click

from pravah.cli.client import (
    cancel_command,
    jobs_command,
    results_command,
    retry_command,
    status_command,
    submit_command,
)
from pravah.cli.keys import keys_app
from pravah.cli.local import engine_command, serve_command, tasks_command
from pravah.cli.roles import migrate_command, worker_command
from pravah.cli.run import run_command
from pravah.cli.schedule import schedule_app


def _help_labels_as_values() -> None:
    """Help labels an option with the value it takes, a flag with nothing.

    Typer 0.29 labels every parameter with its Python type: `--json <bool>`
    read as if the flag took a value (`--json true` is then an unexpected
    extra argument), and `--server <str>`, `SOURCE <str>` say nothing a
    user can act on. Here a flag has no label, an option without its own
    metavar is labelled with its name (`--server SERVER`, as argparse does),
    choices keep their list, and an argument's name is its label. The
    usage line names arguments as Unix tools do (`pravah retry JOB_ID`),
    not as Typer's `{job_id}`, which reads like an unfilled template.
    tests/unit/test_cli_app.py checks the rendered help.
    """
    from typer.core import TyperArgument, TyperOption

    typed = TyperOption.display_type_rich

    def option_label(self: TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag:
            return None
        if self.metavar is None and not self.type_descriptor.is_choice:
            return (self.name or "value").upper()
        return typed(self, ctx)

    def argument_label(self: TyperArgument, ctx: typer.Context) -> str | None:
        return None

    def argument_name(self: TyperArgument, *_: object) -> str:
        return self.metavar or (self.name or "arg").upper()

    def argument_usage(self: TyperArgument) -> str:
        name = argument_name(self) if self.required else f"[{argument_name(self)}]"
        return name if self.nargs == 1 else f"{name}..."

    def argument_hint(self: TyperArgument, *_: object) -> str:
        return f"'{argument_name(self)}'"  # "Missing argument 'JOB_ID'."

    TyperOption.display_type_rich = option_label  # type: ignore[method-assign,assignment]
    TyperArgument.display_type_rich = argument_label  # type: ignore[method-assign,assignment]
    TyperArgument._usage_display_name = argument_usage  # type: ignore[method-assign]
    TyperArgument.get_error_hint = argument_hint  # type: ignore[method-assign,assignment]


_help_labels_as_values()

app = typer.Typer(
    name="pravah",
    help="Pravah: process a directory of files with a task, tracked as a job.",
    no_args_is_help=True,
    add_completion=False,
    # Expected errors are reported in one line by handle_errors(); anything
    # that reaches Typer is a bug and should show a plain, complete traceback.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from pravah import __version__

        typer.echo(f"pravah {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Pravah: process a directory of files with a task, tracked as a job."""


LOCAL = "Run locally"
REMOTE = "Talk to a server (pravah serve)"

app.command("run", rich_help_panel=LOCAL)(run_command)
app.command("tasks", rich_help_panel=LOCAL)(tasks_command)
app.command("serve", rich_help_panel=LOCAL)(serve_command)
app.command("engine", rich_help_panel=LOCAL)(engine_command)
app.command("worker", rich_help_panel=LOCAL)(worker_command)
app.command("migrate", rich_help_panel=LOCAL)(migrate_command)
app.add_typer(keys_app, rich_help_panel=LOCAL)
app.command("submit", rich_help_panel=REMOTE)(submit_command)
app.command("status", rich_help_panel=REMOTE)(status_command)
app.command("results", rich_help_panel=REMOTE)(results_command)
app.command("cancel", rich_help_panel=REMOTE)(cancel_command)
app.command("retry", rich_help_panel=REMOTE)(retry_command)
app.add_typer(schedule_app, name="schedule", rich_help_panel=REMOTE)
app.command("jobs", rich_help_panel=REMOTE)(jobs_command)


@cache
def click_command() -> _click.Command:
    """The Click command Typer builds from `app`.

    Typer's `app()` builds it again on every call, from the commands'
    signatures: 26 ms of a warm 0.12 s command. A warm-start resident
    (pravah.cli.resident) builds it once, before it forks.
    """
    return typer.main.get_command(app)


def main() -> None:
    """Runs the command line (`pravah.cli.main` is the console script)."""
    # Named as invoked, as Click would name it in a process of its own; in a
    # resident's child it would say `python -m pravah.cli...`.
    click_command()(prog_name=os.path.basename(sys.argv[0]))
