"""Unit tests of the CLI's atomic JSON-lines writer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pravah.cli.output import write_jsonl_atomic


def test_lines_of_every_kind_are_written_one_per_line(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    count = write_jsonl_atomic(
        target, [{"path": "a", "n": 1}, '{"path":"b"}\n', b'{"path":"c"}', ""]
    )
    assert count == 3
    lines = target.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["a", "b", "c"]
    assert list(target.parent.iterdir()) == [target]


def test_failure_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text("old\n")

    def lines() -> Iterator[dict[str, str]]:
        yield {"path": "a"}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(target, lines())
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_device_a_fifo_or_a_symlink_is_written_through_never_replaced(tmp_path: Path) -> None:
    """`--output /dev/null` (or /dev/full) replaced the device with a regular
    file, and `--output link.jsonl` replaced the link."""
    import os
    import stat
    import threading

    from pravah.cli.output import check_writable

    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    check_writable(link)
    assert write_jsonl_atomic(link, [{"a": 1}]) == 1
    assert link.is_symlink() and real.read_text() == '{"a":1}\n'
    assert stat.S_IMODE(real.stat().st_mode) == 0o600, "a replaced file keeps its mode"
    # A null device of our own (never the system's name: as root, a
    # regression would replace it). Without root, a link to the system's
    # device: writing through it then needs no right on /dev either way.
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        null.symlink_to(os.devnull)
    check_writable(null)
    assert write_jsonl_atomic(null, [{"a": 1}]) == 1
    assert stat.S_ISCHR(null.stat().st_mode) and null.read_bytes() == b""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert write_jsonl_atomic(fifo, [{"b": 2}]) == 1
    reader.join(timeout=10)
    assert got == [b'{"b":2}\n'] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fifo",
        "link.jsonl",
        "null",
        "real.jsonl",
    ]
