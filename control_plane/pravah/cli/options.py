"""Turns command-line words into the job request that the API also accepts.

Why a module of its own: `pravah run` (in-process) and `pravah submit` (over
REST) must build the very same request from the very same flags, and the
parsing rules (``--option KEY=VALUE`` values are JSON when they parse, sizes
are human, a local source must be an existing directory) are pure functions
that unit tests can pin down without a process or a server.

Every failure here raises :class:`CliUsageError`; the command layer turns it
into a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "CliUsageError",
    "build_job_request",
    "parse_options",
    "parse_size",
    "resolve_source",
]


class CliUsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def parse_option_value(raw: str) -> Any:
    """A value as JSON when it parses (``10``, ``true``, ``"x"``, ``[1]``), else the string.

    ``NaN``/``Infinity`` are JSON-ish tokens that Python's parser accepts but no
    schema wants, so they stay strings.
    """
    if raw in {"NaN", "Infinity", "-Infinity"}:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """Parses repeated ``KEY=VALUE`` words into the task's options object.

    A key given twice is an error rather than a silent override: with options
    coming from shell history and scripts, a duplicate is far more often a
    mistake than an intent.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliUsageError(f"--option expects KEY=VALUE, got {item!r}")
        if not _OPTION_KEY.match(key):
            raise CliUsageError(f"--option key {key!r} is not a valid option name")
        if key in options:
            raise CliUsageError(f"--option {key!r} is given more than once")
        options[key] = parse_option_value(raw)
    return options


def parse_size(text: str, *, flag: str = "size") -> int:
    """Bytes from a human size ("100MB", "1.5GiB", "4096"); CliUsageError otherwise.

    pravah.units is the one definition of sizes shared with the API, so the
    same mistake gets the same explanation from both front ends.
    """
    from pravah.units import parse_size as _parse

    try:
        return _parse(text)
    except ValueError as exc:
        raise CliUsageError(f"{flag}: {exc}") from exc


def resolve_source(source: str) -> str:
    """Checks a local source and makes it absolute; other URIs pass unchanged.

    A local path is made absolute because the job may run in another process
    (the server) with another working directory.
    """
    if not source.strip():
        raise CliUsageError("SOURCE must not be empty")
    parsed = urlparse(source)
    if parsed.scheme == "file":
        path = Path(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        # s3://bucket/prefix and friends: the engine decides what it can read.
        return source
    else:
        path = Path(source)
    path = path.expanduser()
    if not path.exists():
        raise CliUsageError(f"source {source!r} does not exist")
    if not path.is_dir():
        raise CliUsageError(f"source {source!r} is a file, not a directory")
    return str(path.resolve())


def _clean_extensions(extensions: Sequence[str]) -> list[str]:
    cleaned = []
    for ext in extensions:
        for part in ext.split(","):
            part = part.strip().lstrip(".")
            if part:
                cleaned.append(part.lower())
    return cleaned


def build_job_request(
    *,
    source: str,
    task: str,
    options: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    extensions: Sequence[str] = (),
    min_size: str | None = None,
    max_size: str | None = None,
    hidden: bool = False,
    follow_symlinks: bool = False,
    max_depth: int | None = None,
    destination: str | None = None,
    check_source: bool = True,
) -> dict[str, Any]:
    """The JSON body of ``POST /jobs`` (and the input of ``JobCreate``).

    Only what the user set is sent, so the server's defaults stay the
    defaults.
    """
    if not task.strip():
        raise CliUsageError("--task must not be empty")
    min_bytes = parse_size(min_size, flag="--min-size") if min_size is not None else None
    max_bytes = parse_size(max_size, flag="--max-size") if max_size is not None else None
    if min_bytes is not None and max_bytes is not None and min_bytes > max_bytes:
        raise CliUsageError(f"--min-size ({min_size}) is larger than --max-size ({max_size})")
    if max_depth is not None and max_depth < 0:
        raise CliUsageError("--max-depth must be 0 (no limit) or more")

    filters: dict[str, Any] = {}
    if include:
        filters["include"] = list(include)
    if exclude:
        filters["exclude"] = list(exclude)
    exts = _clean_extensions(extensions)
    if exts:
        filters["extensions"] = exts
    if min_bytes is not None:
        filters["min_size"] = min_bytes
    if max_bytes is not None:
        filters["max_size"] = max_bytes
    if hidden:
        filters["include_hidden"] = True
    if follow_symlinks:
        filters["follow_symlinks"] = True
    if max_depth:
        filters["max_depth"] = max_depth

    request: dict[str, Any] = {
        "source": resolve_source(source) if check_source else source,
        "task": task.strip(),
        "options": parse_options(options),
    }
    if filters:
        request["filters"] = filters
    if destination:
        request["destination"] = destination
    return request
