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
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pravah.globs import glob_error

__all__ = [
    "CliUsageError",
    "build_job_request",
    "build_steps",
    "load_pipeline_file",
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


def check_output_file(path: Path | None, *, json_output: bool = False) -> None:
    """``--output`` checked before any work is done: a new file must be possible there."""
    from pravah.cli.output import check_writable, is_stdout

    if json_output and is_stdout(path):
        raise CliUsageError("--json and --output - both write to standard output; choose one")
    if path is None or is_stdout(path):
        return
    from pravah.sandbox import nearest_existing

    folder = str(path.expanduser().parent)
    try:
        check_writable(path)
    except (FileExistsError, NotADirectoryError) as exc:
        missing = Path(exc.filename or folder)
        where = nearest_existing(missing) or missing
        raise CliUsageError(
            f"--output {str(path)!r}: {str(where)!r} is a file, not a folder"
        ) from None
    except OSError as exc:
        raise CliUsageError(
            f"--output {str(path)!r}: no file can be created in {folder!r} ({exc.strerror or exc})"
        ) from None


def glob_literal(name: str) -> str:
    """A glob that matches `name` only: the engine's glob characters escaped with a backslash."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", name)


def absolute_local(text: str) -> str:
    """A local path made absolute against this process's folder (``~`` expanded);
    URIs (s3://, file://) pass unchanged.

    Why: the server refuses relative paths (it cannot know the caller's
    folder), so a client names the folder it means. Symlinks and ".." are
    left for the server to resolve on its own file system.
    """
    if "://" in text or not text.strip():
        return text
    return str(Path(text).expanduser().absolute())


def resolve_source(source: str) -> str:
    """Checks a local source and makes it absolute; other URIs pass unchanged.

    A local path is made absolute because the job may run in another process
    (the server) with another working directory.
    """
    if not source.strip():
        raise CliUsageError("SOURCE must not be empty")
    parsed = urlparse(source)
    if parsed.scheme == "file":
        # Read as the server reads it: percent-decoded (RFC 8089), local host only.
        from pravah.errors import InvalidRequestError
        from pravah.sandbox import local_path

        try:
            path = local_path(source, "source")
        except InvalidRequestError as exc:
            raise CliUsageError(str(exc)) from None
    elif parsed.scheme and len(parsed.scheme) > 1:
        # s3://bucket/prefix and friends: the engine decides what it can read.
        return source
    else:
        path = Path(source)
    path = path.expanduser()
    if not path.exists():
        raise CliUsageError(f"source {source!r} does not exist")
    if not path.is_dir():
        # The way to the one file: its folder, narrowed to its name, spelled
        # so that it can be pasted into a shell as it is.
        folder, pick = shlex.quote(str(path.parent)), shlex.quote(glob_literal(path.name))
        raise CliUsageError(
            f"source {source!r} is a file, not a directory; to process just this file, "
            f"give its folder and pick it: {folder} --include {pick}"
        )
    return str(path.resolve())


# A pipeline is a short list of steps: a file above this size, or a document
# that YAML aliases expand to more values than this, is refused before it is
# used (`--pipeline /dev/zero`, a "billion laughs" file).
MAX_PIPELINE_FILE_BYTES = 1 << 20
MAX_PIPELINE_VALUES = 10_000


def load_pipeline_file(path: Path) -> list[dict[str, Any]]:
    """Steps from a YAML (or JSON, a subset) file: a list of {task, options}, or {steps: [...]}."""
    import yaml

    name = f"--pipeline {str(path)!r}"
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PIPELINE_FILE_BYTES + 1)
    except OSError as exc:
        raise CliUsageError(f"{name} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_PIPELINE_FILE_BYTES:
        raise CliUsageError(f"{name} is larger than {MAX_PIPELINE_FILE_BYTES >> 20} MiB")
    try:
        document = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CliUsageError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise CliUsageError(f"{name} is not valid YAML: {exc}") from None
    if _values_beyond(document, MAX_PIPELINE_VALUES):
        raise CliUsageError(
            f"{name} expands to more than {MAX_PIPELINE_VALUES:,} values "
            "(through YAML aliases?); a pipeline is a short list of steps"
        )
    if isinstance(document, dict) and "steps" in document:
        document = document["steps"]
    if not isinstance(document, list) or not document:
        raise CliUsageError(
            f"--pipeline {str(path)!r} must hold a non-empty list of steps "
            "({task: NAME, options: {...}})"
        )
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(document, start=1):
        if isinstance(step, str):
            step = {"task": step}
        if not isinstance(step, dict) or not isinstance(step.get("task"), str):
            raise CliUsageError(f"--pipeline step {i} needs a 'task' name")
        extra = set(step) - {"task", "options"}
        if extra:
            raise CliUsageError(f"--pipeline step {i} has unknown keys: {', '.join(sorted(extra))}")
        options = step.get("options") or {}
        if not isinstance(options, dict):
            raise CliUsageError(f"--pipeline step {i}: 'options' must be a mapping")
        steps.append({"task": step["task"], "options": options})
    return steps


def _check_utf8(flag: str, values: Iterable[str]) -> None:
    """Paths and globs travel as UTF-8 (JSON, gRPC); a name in another encoding
    (Latin-1 from an old system) reached Python as lone surrogates and was
    refused as 'Input should be a valid string'."""
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise CliUsageError(
                f"{flag} '{shown}' is not valid UTF-8; Pravah needs the source, destination "
                "and globs in UTF-8 (file names inside the source may be in any encoding): "
                "give a parent folder, and match such names with ? or *"
            ) from None


def _age_or_date(flag: str, value: str, age_key: str, date_key: str) -> tuple[str, str]:
    """The filter `value` sets: an age ('1d') under `age_key`, a date under `date_key`."""
    from pravah.units import parse_datetime, parse_duration

    try:
        if parse_duration(value) is not None:
            return age_key, value.strip()
        return date_key, parse_datetime(value).isoformat()
    except ValueError as exc:
        raise CliUsageError(
            f"{flag} {value!r}: {exc}; give an age (12h, 1d, 2w) or a date (2024-05-01)"
        ) from None


def _values_beyond(document: Any, limit: int) -> bool:
    """Whether `document` holds more than `limit` values once aliases are expanded.

    Counts by walking, and stops at the limit, so a document whose aliases
    expand to billions of values costs `limit` steps.
    """
    pending = [document]
    seen = 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def build_steps(
    tasks: Sequence[str], options: Sequence[str], pipeline_file: Path | None
) -> list[dict[str, Any]]:
    """The job's steps from ``--task`` (repeatable), ``--option`` and ``--pipeline``.

    With one ``--task``, options are ``KEY=VALUE``; with several, each is
    ``TASK.KEY=VALUE`` (or ``N.KEY=VALUE`` for step N, from 1) so it is clear
    which step it configures.
    """
    names = [t.strip() for t in tasks]
    if any(not n for n in names):
        raise CliUsageError("--task must not be empty")
    if pipeline_file is not None:
        if names:
            raise CliUsageError("give either --task or --pipeline, not both")
        if options:
            raise CliUsageError("with --pipeline, put options in the pipeline file")
        return load_pipeline_file(pipeline_file)
    if not names:
        raise CliUsageError("give a task (--task NAME) or a pipeline (--pipeline FILE)")
    if len(names) == 1:
        return [{"task": names[0], "options": parse_options(options)}]
    per_step: list[list[str]] = [[] for _ in names]
    for item in options:
        prefix, dot, rest = item.partition(".")
        if not dot:
            raise CliUsageError(
                f"--option {item!r}: with several --task flags, write TASK.KEY=VALUE"
            )
        if prefix.isdigit() and 1 <= int(prefix) <= len(names):
            idx = [int(prefix) - 1]
        else:
            idx = [i for i, n in enumerate(names) if n == prefix]
        if len(idx) != 1:
            raise CliUsageError(
                f"--option {item!r}: {prefix!r} names no single step; "
                f"use one of {', '.join(names)} or a step number"
            )
        per_step[idx[0]].append(rest)
    return [
        {"task": n, "options": parse_options(opts)} for n, opts in zip(names, per_step, strict=True)
    ]


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
    task: str | Sequence[str] = (),
    options: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    extensions: Sequence[str] = (),
    min_size: str | None = None,
    max_size: str | None = None,
    older_than: str | None = None,
    newer_than: str | None = None,
    hidden: bool = False,
    follow_symlinks: bool = False,
    max_depth: int | None = None,
    destination: str | None = None,
    check_source: bool = True,
    pipeline_file: Path | None = None,
    max_error_ratio: float | None = None,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /jobs`` (and the input of ``JobCreate``).

    Only what the user set is sent, so the server's defaults stay the
    defaults.
    """
    steps = build_steps([task] if isinstance(task, str) else task, options, pipeline_file)
    _check_utf8("SOURCE", [source])
    _check_utf8("--include", include)
    _check_utf8("--exclude", exclude)
    _check_utf8("--dest", [destination] if destination else [])
    min_bytes = parse_size(min_size, flag="--min-size") if min_size is not None else None
    max_bytes = parse_size(max_size, flag="--max-size") if max_size is not None else None
    if min_bytes is not None and max_bytes is not None and min_bytes > max_bytes:
        raise CliUsageError(f"--min-size ({min_size}) is larger than --max-size ({max_size})")
    if max_depth is not None and not 0 <= max_depth < 2**32:
        raise CliUsageError("--max-depth must be 0 (no limit) or a depth below 2**32")
    for flag, globs in (("--include", include), ("--exclude", exclude)):
        for glob in globs:
            reason = glob_error(glob)
            if reason is not None:
                raise CliUsageError(f"{flag} {shlex.quote(glob)} is not a valid glob: {reason}")

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
    for flag, value, age_key, date_key in (
        ("--older-than", older_than, "min_age", "modified_before"),
        ("--newer-than", newer_than, "max_age", "modified_after"),
    ):
        if value is not None:
            key, text = _age_or_date(flag, value, age_key, date_key)
            filters[key] = text
    if hidden:
        filters["include_hidden"] = True
    if follow_symlinks:
        filters["follow_symlinks"] = True
    if max_depth:
        filters["max_depth"] = max_depth

    request: dict[str, Any] = {
        "source": resolve_source(source) if check_source else absolute_local(source)
    }
    if len(steps) == 1 and pipeline_file is None:
        request["task"] = steps[0]["task"]
        request["options"] = steps[0]["options"]
    else:
        request["pipeline"] = steps
    if max_error_ratio is not None:
        request["max_error_ratio"] = max_error_ratio
    if filters:
        request["filters"] = filters
    if destination:
        request["destination"] = absolute_local(destination)
    encryption = _encryption(sse, sse_kms_key_id)
    if encryption is not None:
        if not (destination or "").startswith("s3://"):
            raise CliUsageError("--sse applies to objects written to an s3:// --dest")
        request["encryption"] = encryption
    return request


# --sse spellings: S3's header values and the engine's mode names.
_SSE_MODES = {"aes256": "sse-s3", "sse-s3": "sse-s3", "aws:kms": "sse-kms", "sse-kms": "sse-kms"}


def _encryption(sse: str | None, kms_key_id: str | None) -> dict[str, str] | None:
    """The job's ``encryption`` from --sse and --sse-kms-key-id (None: the default)."""
    if sse is None and not kms_key_id:
        return None
    mode = _SSE_MODES.get((sse or "aws:kms").strip().lower())
    if mode is None:
        raise CliUsageError(f"--sse must be aes256 or aws:kms, not {sse!r}")
    if kms_key_id and mode != "sse-kms":
        raise CliUsageError("--sse-kms-key-id goes with --sse aws:kms")
    encryption = {"mode": mode}
    if kms_key_id:
        encryption["kms_key_id"] = kms_key_id
    return encryption
