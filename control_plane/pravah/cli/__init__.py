"""The `pravah` command-line interface.

Why a package: the CLI is several front ends over one service layer (an
embedded single-machine run, process launchers, and a REST client), each in
a small module. This file stays import-light so the pure helpers
(`pravah.cli.options`, `pravah.cli.render`) load without the whole app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (`pravah = "pravah.cli:main"`)."""
    from pravah.cli.app import main as app_main

    app_main()


def __getattr__(name: str) -> Any:
    if name == "app":
        from pravah.cli.app import app

        typer_app: Typer = app
        return typer_app
    raise AttributeError(name)
