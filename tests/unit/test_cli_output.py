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
