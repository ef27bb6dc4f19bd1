"""Atomic output files for ``--output``, or standard output for ``--output -``.

Why: a results file is often consumed by another program watching for it; a
crash or Ctrl-C half-way must never leave a truncated file under the final
name. Lines go to a temporary file in the same directory (same filesystem,
so the rename is atomic), which is fsynced and then renamed over the target.
``-`` is standard output, as for most Unix tools: the lines can be piped
into `jq` or another program, and the commands print their report on
standard error instead.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "atomic_writer",
    "check_writable",
    "is_stdout",
    "not_written",
    "write_jsonl",
    "write_jsonl_atomic",
]


def is_stdout(path: Path | None) -> bool:
    """Whether ``--output`` names standard output (``-``)."""
    return path is not None and str(path) == "-"


def not_written(path: Path, exc: OSError) -> str:
    """How a results file that could not be written is reported (where the results
    are instead is for the caller to add)."""
    return f"the results could not be written to {str(path)!r}: {exc.strerror or exc}"


def _temp_in(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target`` (its folders made first): fd and name."""
    directory = target.parent if str(target.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)


def _target(path: Path) -> tuple[Path, os.stat_result | None]:
    """Where the lines of ``--output path`` go, and what is there now.

    A symlink is followed, so the file it names gets the lines and the link
    stays a link. Whatever is there is looked at: a device or a named pipe
    (``/dev/null``, a FIFO another program reads) is written in place, never
    replaced by a regular file of the same name.
    """
    target = Path(os.path.realpath(path.expanduser()))
    try:
        return target, target.stat()
    except FileNotFoundError:
        return target, None


def _in_place(existing: os.stat_result | None) -> bool:
    return existing is not None and not stat.S_ISREG(existing.st_mode)


def check_writable(path: Path) -> None:
    """Raises OSError now when :func:`atomic_writer` could not write ``path`` later.

    The results file is written after the job: an hour-long job must not end
    in a traceback because the file's folder is read-only or not a folder.
    Missing folders are made, as the write would make them.
    """
    target, existing = _target(path)
    if _in_place(existing):
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return
    fd, tmp_name = _temp_in(target)
    os.close(fd)
    os.unlink(tmp_name)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Yields a binary file; on clean exit it replaces ``path``, on error it vanishes.

    A device or named pipe at ``path`` is written in place instead (see
    :func:`_target`); a file replaced keeps its permission bits.
    """
    target, existing = _target(path)
    if _in_place(existing):
        with target.open("wb") as handle:
            yield handle
        return
    fd, tmp_name = _temp_in(target)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(existing.st_mode) if existing is not None else 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, lines: Iterable[Mapping[str, Any] | str | bytes]) -> int:
    """:func:`write_jsonl_atomic`, or the lines on standard output for ``-``
    (then the count is 0 when the reader stopped early; no command shows it)."""
    if not is_stdout(path):
        return write_jsonl_atomic(path, lines)
    try:
        count = _write_lines(sys.stdout.buffer, lines)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader stopped (`| head`): as for other Unix tools, not an
        # error. Standard output goes to /dev/null, so that the exit's
        # flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    return count


def write_jsonl_atomic(path: Path, lines: Iterable[Mapping[str, Any] | str | bytes]) -> int:
    """Writes one JSON document per line; returns the number of lines written.

    Lines may be dicts (serialized here) or already-serialized text/bytes
    (passed through, so lines streamed from the server stay byte-identical).
    """
    with atomic_writer(path) as handle:
        return _write_lines(handle, lines)


def _write_lines(handle: BinaryIO, lines: Iterable[Mapping[str, Any] | str | bytes]) -> int:
    count = 0
    for line in lines:
        if isinstance(line, bytes):
            data = line.rstrip(b"\n")
        elif isinstance(line, str):
            data = line.rstrip("\n").encode()
        else:
            data = json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()
        if not data:
            continue
        handle.write(data + b"\n")
        count += 1
    return count
