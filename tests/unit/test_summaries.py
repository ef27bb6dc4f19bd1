"""Merging per-chunk summaries into a job's summary (pravah.summaries)."""

from __future__ import annotations

from typing import Any

from pravah.summaries import LARGEST_KEPT, MAX_LISTED, merge_summaries


def _csv_summary(schemas: list[tuple[str, int]], omitted: int = 0, in_omitted: int = 0) -> Any:
    """A csv-header chunk summary as the engine writes it."""
    listed = [{"columns": [c], "files": n, "example": f"{c}.csv"} for c, n in schemas]
    return {
        "schemas": listed,
        "distinct_schemas": len(listed) + omitted,
        "omitted_schemas": omitted,
        "files_in_omitted_schemas": in_omitted,
        "files": sum(n for _, n in schemas) + in_omitted,
        "failed": 0,
    }


def test_a_merged_groups_example_is_its_smallest_path_whatever_order_chunks_end_in() -> None:
    def chunk(example: str) -> Any:
        return {"schemas": [{"columns": ["a"], "files": 1, "example": example}], "files": 1}

    chunks = [chunk("m/x.csv"), chunk("b.csv"), chunk("a/y.csv")]
    for order in (chunks, chunks[::-1], chunks[1:] + chunks[:1]):
        merged = merge_summaries(order)
        assert merged is not None
        assert merged["schemas"] == [{"columns": ["a"], "files": 3, "example": "a/y.csv"}]


def test_chunk_summaries_add_up_and_group_by_columns() -> None:
    merged = merge_summaries(
        [_csv_summary([("id", 3), ("a", 1)]), None, _csv_summary([("a", 5), ("b", 1)])]
    )
    assert merged is not None
    assert [(s["columns"], s["files"], s["example"]) for s in merged["schemas"]] == [
        (["a"], 6, "a.csv"),
        (["id"], 3, "id.csv"),
        (["b"], 1, "b.csv"),
    ]
    assert (merged["files"], merged["distinct_schemas"], merged["omitted_schemas"]) == (10, 3, 0)


def test_a_merged_list_of_headerless_schemas_is_capped_and_the_rest_counted() -> None:
    """Headerless files make a schema each: 500,000 of them in one job summary
    was some 80 MB to store, send and draw. Each chunk lists up to MAX_LISTED
    (and counts what it omits); the merge keeps that cap."""
    first = _csv_summary([("id", 10)] + [(f"row {i}", 1) for i in range(MAX_LISTED - 1)], 40, 40)
    second = _csv_summary([("id", 5)] + [(f"line {i}", 1) for i in range(300)])
    merged = merge_summaries([first, second])
    assert merged is not None
    assert len(merged["schemas"]) == MAX_LISTED
    assert merged["schemas"][0] == {"columns": ["id"], "files": 15, "example": "id.csv"}
    # 1,299 single-file schemas listed by the chunks, 999 kept: 300 cut, plus
    # the 40 the first chunk had omitted already.
    assert merged["omitted_schemas"] == 300 + 40
    assert merged["files_in_omitted_schemas"] == 300 + 40
    assert merged["distinct_schemas"] == MAX_LISTED + 340
    assert merged["files"] == first["files"] + second["files"]


def test_lists_without_an_omitted_count_are_not_capped() -> None:
    big = {"by_extension": [{"extension": f"e{i}", "files": 1} for i in range(MAX_LISTED + 5)]}
    merged = merge_summaries([big, {"by_extension": [{"extension": "x", "files": 2}]}])
    assert merged is not None
    assert len(merged["by_extension"]) == MAX_LISTED + 6


def test_largest_files_of_small_chunks_are_all_kept_up_to_the_engines_count() -> None:
    """Chunks of 2 files list 2 largest each; the job's list is not cut to 2."""
    chunk = [
        {"files": 2, "largest": [{"path": f"f{i}", "size": 100 - i}, {"path": f"g{i}", "size": i}]}
        for i in range(15)
    ]
    largest = merge_summaries(chunk)["largest"]  # type: ignore[index]
    assert len(largest) == LARGEST_KEPT
    assert largest[0] == {"path": "f0", "size": 100}
    assert [e["size"] for e in largest] == sorted((e["size"] for e in largest), reverse=True)
