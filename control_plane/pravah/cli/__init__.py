"""The `pravah` command-line interface.

Why a package: the CLI is several front ends over one service layer (an
embedded single-machine run, process launchers, and a REST client), each in
a small module. This file stays import-light so the pure helpers
(`pravah.cli.options`, `pravah.cli.render`) load without the whole app.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

# Not `typing.TYPE_CHECKING`: a warm-started command pays for every import
# of this module (typing alone is 3 ms of its 15).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from typer import Typer

__all__ = ["app", "exit_code", "main", "run_here"]


def main() -> NoReturn:
    """Console-script entry point (`pravah = "pravah.cli:main"`).

    The command goes to a warm-start resident when one is there
    (pravah.cli.warm_start); otherwise it runs here, cold, and a resident
    is started on the way out for the commands that follow.

    Pydantic's plugin discovery is turned off unless the caller set
    PYDANTIC_DISABLE_PLUGINS: on its first model it reads the entry points
    of every installed distribution (40 ms of a 0.6 s `pravah run`, more in
    a crowded environment) for plugins Pravah does not use.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from pravah.cli import warm_start

    code = warm_start.handed_over(sys.argv)
    if code is None:
        code = _run_command()
        warm_start.start_resident()
    _exit(code)


def run_here(report: Callable[[int], object]) -> NoReturn:
    """Runs the command of ``sys.argv`` in this process and ends it (a resident's child).

    ``report`` is told the exit status once output is flushed, just before the end.
    """
    _exit(_run_command(), report)


def _run_command() -> int:
    from pravah.cli.app import main as app_main

    try:
        app_main()
    except SystemExit as stop:
        return exit_code(stop)
    return 0


def _exit(code: int, report: Callable[[int], object] | None = None) -> NoReturn:
    """Ends the process with `os._exit` once its exit handlers have run and output is flushed.

    The interpreter's own teardown (gRPC core shutdown, freeing every
    imported module) adds about 0.2 s to each command and does nothing a
    finished command needs.
    """
    atexit._run_exitfuncs()  # what a normal exit would run: span exporters, log handlers
    logging = sys.modules.get("logging")  # not imported by a command handed to a resident
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not change the status
            stream.flush()
    if report is not None:
        report(code)
    os._exit(code)


def exit_code(stop: SystemExit) -> int:
    """The status `sys.exit(arg)` would end the process with (a message is printed, status 1)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def __getattr__(name: str) -> Any:
    if name == "app":
        from pravah.cli.app import app

        typer_app: Typer = app
        return typer_app
    raise AttributeError(name)
