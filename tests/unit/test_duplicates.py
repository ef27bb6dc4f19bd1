"""pravah.duplicates: regrouping a hash job's duplicates from its result lines."""

from __future__ import annotations

import json
from typing import Any

from pravah.duplicates import regroup


def _lines(*results: dict[str, Any]) -> list[bytes]:
    return [json.dumps(r).encode() for r in results]


def test_failed_lines_and_other_steps_lines_are_not_files_of_a_group() -> None:
    h, other = "ab" * 32, "cd" * 32
    lines = _lines(
        {"path": "x/a", "size": 10, "algorithm": "sha256", "hash": h},
        {"path": "x/b", "size": 10, "error": "permission denied", "error_kind": "io"},
        {"path": "x/c", "size": 10, "algorithm": "sha256", "hash": h},
        # Same hash, other size: another group (the engine keys on both).
        {"path": "x/d", "size": 11, "algorithm": "sha256", "hash": h},
        # An earlier pipeline step's line (extract) has no hash.
        {"path": "archive.zip", "size": 10, "output": "archive", "entries": 3},
        {"path": "x/e", "size": 4, "algorithm": "sha256", "hash": other, "inode": "1:7"},
        {"path": "x/f", "size": 4, "algorithm": "sha256", "hash": other, "inode": "1:7"},
    )
    merged = {"algorithm": "sha256", "files": 6, "failed": 1, "distinct": 99}
    out = regroup(merged, lambda: iter(lines))
    assert out["files"] == 6 and out["failed"] == 1  # kept as merged
    assert out["distinct"] == 3
    assert out["duplicate_groups"] == 1
    assert out["duplicates"] == [
        {"hash": h, "files": 2, "size": 10, "wasted_bytes": 10, "example": "x/a"}
    ]
    assert out["wasted_bytes"] == 10
    assert out["duplicate_files"] == 2


def test_a_path_that_spells_size_and_hash_is_read_as_a_path() -> None:
    """The engine's compact lines are searched, not parsed, on the first pass."""
    h = "ef" * 32
    tricky = 'x"size":1,"hash":"' + "00" * 32 + '".bin'
    compact = (",", ":")
    lines = [
        json.dumps(
            {"path": tricky, "size": 7, "algorithm": "blake3", "hash": h}, separators=compact
        ),
        json.dumps(
            {"path": "plain", "size": 7, "algorithm": "blake3", "hash": h}, separators=compact
        ),
    ]
    out = regroup({}, lambda: (line.encode() for line in lines))
    assert out["distinct"] == 1
    assert out["duplicates"] == [
        {"hash": h, "files": 2, "size": 7, "wasted_bytes": 7, "example": "plain"}
    ]
