"""Results pagination over synthetic part files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pravah import results
from pravah.results import Part, iter_jsonl, load_parts, read_page, write_manifest


def _make_parts(workspace: Path, sizes: list[int]) -> list[Part]:
    out = workspace / "results"
    out.mkdir(parents=True)
    parts = []
    n = 0
    for index, size in enumerate(sizes):
        path = out / f"chunk-{index:06d}-000000.jsonl"
        lines = []
        for _ in range(size):
            lines.append(json.dumps({"path": f"f{n}.csv", "size": n, "columns": ["a"]}))
            n += 1
        path.write_text("".join(line + "\n" for line in lines))
        parts.append(Part(path=f"file://{path}", files=size, work_id=f"chunk-{index:06d}"))
    return parts


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (3, 0), (4, 2), (5, 5), (100, 0), (2, 9)])
def test_read_page_matches_flat_slice(tmp_path: Path, limit: int, offset: int) -> None:
    parts = _make_parts(tmp_path, [3, 0, 4, 3])
    write_manifest(tmp_path, list(reversed(parts)))  # manifest sorts them
    loaded = load_parts(tmp_path)
    assert loaded is not None
    assert results.total_results(loaded) == 10
    page = read_page(loaded, limit, offset, tmp_path)
    assert [item["path"] for item in page] == [f"f{i}.csv" for i in range(10)][
        offset : offset + limit
    ]


def test_read_page_skips_parts_before_offset_unopened(tmp_path: Path) -> None:
    parts = _make_parts(tmp_path, [2, 2])
    # The first part no longer exists: reading past it must not open it.
    Path(parts[0].path.removeprefix("file://")).unlink()
    assert [r["path"] for r in read_page(parts, 2, 2, tmp_path)] == ["f2.csv", "f3.csv"]


def test_offset_past_the_end_is_empty(tmp_path: Path) -> None:
    parts = _make_parts(tmp_path, [2])
    assert read_page(parts, 10, 50, tmp_path) == []


def test_without_manifest_parts_are_counted(tmp_path: Path) -> None:
    _make_parts(tmp_path, [2, 3])
    loaded = load_parts(tmp_path)
    assert loaded is not None
    assert [p.files for p in loaded] == [2, 3]


def test_no_results_dir_means_no_results(tmp_path: Path) -> None:
    assert load_parts(tmp_path) is None


def test_jsonl_streams_every_line_in_order(tmp_path: Path) -> None:
    parts = _make_parts(tmp_path, [2, 1])
    lines = list(iter_jsonl(parts, tmp_path))
    assert [json.loads(x)["path"] for x in lines] == ["f0.csv", "f1.csv", "f2.csv"]
    assert all(x.endswith(b"\n") for x in lines)
