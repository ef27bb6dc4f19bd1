"""What every command shares: consoles, exit codes, error reporting, settings.

Why one place: the promise of the CLI is that a mistake gives one clear line
on stderr and a predictable exit code (0 done, 1 failed, 2 bad input, 130
interrupted) -- never a traceback. The mapping from exceptions to exit codes
lives here so each command only raises.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from pravah.cli.options import CliUsageError
from pravah.cli.visible import visible

if TYPE_CHECKING:
    from pravah.settings import Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliFailure",
    "bind_consoles",
    "err_console",
    "fail",
    "format_validation_error",
    "handle_errors",
    "load_settings",
    "out_console",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# stdout carries results (tables, JSON); stderr carries progress and errors,
# so `pravah run ... --json | jq` always sees a clean document. No markup:
# what they print is full of file names, CSV columns and messages, where
# "price [USD]" or "[b]" must come out as written, not as a style.
out_console = Console(highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def bind_consoles() -> None:
    """Sets both consoles up again for this process's streams, terminal and environment.

    A console reads them once, when made: colours, width, NO_COLOR... For a
    child of a warm-start resident (pravah.cli.resident) they were the
    resident's /dev/null. The objects stay the same, so every module that
    imported them prints through the new settings.
    """
    Console.__init__(out_console, highlight=False, markup=False)
    Console.__init__(err_console, stderr=True, highlight=False, markup=False)


class CliFailure(Exception):
    """A failure already explained in words: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    raise CliFailure(message, code)


def format_validation_error(exc: Any) -> str:
    """A pydantic ValidationError in one line: ``field: message; field: message``."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts) or str(exc)


def _print_error(message: str) -> None:
    # Single line: newlines inside engine/server messages are flattened.
    text = " ".join(message.split())
    err_console.print(Text.assemble(("error:", "bold red"), " ", visible(text)), soft_wrap=True)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Maps expected exceptions to a one-line message and an exit code.

    Anything not listed is a bug and keeps its traceback (set by Typer's
    pretty printer), which is what a bug report needs.
    """
    from pydantic import ValidationError

    from pravah import errors

    try:
        yield
    except CliFailure as exc:
        _print_error(exc.message)
        raise typer.Exit(exc.code) from None
    except CliUsageError as exc:
        _print_error(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except ValidationError as exc:
        _print_error(format_validation_error(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except (errors.InvalidRequestError, errors.ConfigurationError) as exc:
        _print_error(exc.message)
        raise typer.Exit(EXIT_USAGE) from None
    except errors.PravahError as exc:
        _print_error(exc.message)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        err_console.print(Text("interrupted", style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED) from None


def load_settings() -> Settings:
    """Settings from the environment; a bad variable is a usage error, not a traceback."""
    from pydantic import ValidationError

    from pravah.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise CliUsageError(f"invalid configuration: {format_validation_error(exc)}") from exc


def configure_cli_logging(settings: Settings) -> None:
    """Logs to stderr; warnings only unless LOG_LEVEL asks for more.

    A person running `pravah run` wants the progress bar and the table, not
    the service's INFO chatter, yet `LOG_LEVEL=DEBUG pravah run ...` must
    still show everything.
    """
    from pravah.log import configure_logging

    explicit = "LOG_LEVEL" in os.environ or "PRAVAH_LOG_LEVEL" in os.environ
    configure_logging(settings.log_level if explicit else "WARNING")


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
