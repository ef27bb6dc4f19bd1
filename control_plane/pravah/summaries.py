"""Merging the engine's per-chunk summaries into one job summary.

Why: every chunk is its own Process call (see pravah.engine_pool), so the
engine returns one summary per chunk, and a resumed job has summaries from
several runs. Summaries are task-specific JSON, but every task builds them
from the same few shapes, which merge without knowing the task:

- integers are counts: they add up (`files`, `failed`, `bytes_in`, ...);
- a `ratio` next to `bytes_in`/`bytes_out` is recomputed from the sums;
  `distinct_*` is the length of the merged list it counts;
- a list of objects is a grouping: entries with the same non-numeric fields
  (`columns`, `extension`, `path`, ...) are one group; their numbers add up,
  `example` keeps the smallest path, as the engine does (the same files
  give the same summary whatever order the chunks end in); the list is
  ordered by its count (`files`, else `size`, else `bytes`), largest
  first, as the engine does; a
  "largest N" list keeps the engine's N (or the longest input list, if
  longer), whatever the chunks' own lengths;
- a list with an `omitted_<list>` count next to it was capped by the engine
  (csv-header's `schemas`: headerless files make one schema per file): the
  merged list is capped the same way, at MAX_LISTED entries, and what is cut
  is added to `omitted_<list>` and `files_in_omitted_<list>`; its
  `distinct_<list>` then counts listed and omitted entries. An entry omitted
  by one chunk and listed by another is counted in both places: beyond the
  cap, counts are an overview, and every file's own result is exact;
- anything else (strings, floats, nested lists of scalars) keeps the first
  value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

_ORDER_KEYS = ("files", "size", "bytes", "count")
_CAPPED_LISTS = {"largest"}
# The engine's tasks::LARGEST_KEPT: how many entries a "largest N" list has
# once its files are that many. A chunk of fewer files lists them all.
LARGEST_KEPT = 20
# The engine's csv_header::MAX_LISTED_SCHEMAS.
MAX_LISTED = 1000


def _group_key(item: dict[str, Any]) -> str:
    ident = {
        k: v
        for k, v in item.items()
        if k != "example" and not (isinstance(v, (int, float)) and not isinstance(v, bool))
    }
    return json.dumps(ident, sort_keys=True, default=str)


def _merge_groups(name: str, lists: list[list[Any]]) -> list[Any]:
    if not all(isinstance(i, dict) for lst in lists for i in lst):
        return lists[0]
    merged: dict[str, dict[str, Any]] = {}
    for lst in lists:
        for item in lst:
            key = _group_key(item)
            if key not in merged:
                merged[key] = dict(item)
                continue
            target = merged[key]
            if name in _CAPPED_LISTS:
                continue  # the same path seen twice: one entry
            example = item.get("example")
            if isinstance(example, str) and example < str(target.get("example", example)):
                target["example"] = example
            for k, v in item.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    target[k] = int(target.get(k, 0)) + v
    items = list(merged.values())
    order = next((k for k in _ORDER_KEYS if all(k in i for i in items)), None)
    if order is not None:
        items.sort(key=lambda i: (-float(i[order]), _group_key(i)))
    if name in _CAPPED_LISTS:
        items = items[: max(LARGEST_KEPT, *(len(lst) for lst in lists))]
    return items


def _merge_dicts(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    out: dict[str, Any] = {}
    for key in keys:
        values = [d[key] for d in dicts if key in d]
        first = values[0]
        if isinstance(first, bool) or first is None:
            out[key] = first
        elif isinstance(first, int):
            out[key] = sum(v for v in values if isinstance(v, int) and not isinstance(v, bool))
        elif isinstance(first, dict):
            out[key] = _merge_dicts([v for v in values if isinstance(v, dict)])
        elif isinstance(first, list):
            out[key] = _merge_groups(key, [v for v in values if isinstance(v, list)])
        else:
            out[key] = first
    for key in list(out):
        omitted = f"omitted_{key}"
        if isinstance(out[key], list) and isinstance(out.get(omitted), int):
            cut = out[key][MAX_LISTED:]
            out[key] = out[key][:MAX_LISTED]
            out[omitted] += len(cut)
            files = f"files_in_omitted_{key}"
            if isinstance(out.get(files), int):
                out[files] += sum(int(i.get("files", 0)) for i in cut if isinstance(i, dict))
    for key in list(out):
        if key.startswith("distinct_"):
            counted = key[len("distinct_") :]
            lists = [v for k, v in out.items() if isinstance(v, list) and k != key]
            if counted in out and isinstance(out[counted], list):
                out[key] = len(out[counted]) + int(out.get(f"omitted_{counted}", 0))
            elif len(lists) == 1:
                out[key] = len(lists[0])
    if (
        "ratio" in out
        and isinstance(out.get("bytes_in"), int)
        and isinstance(out.get("bytes_out"), int)
    ):
        bytes_out = out["bytes_out"]
        out["ratio"] = round(out["bytes_in"] / bytes_out, 3) if bytes_out else 0.0
    return out


def merge_summaries(summaries: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One summary from many chunk summaries (None when there are none)."""
    present = [s for s in summaries if s]
    if not present:
        return None
    if len(present) == 1:
        return dict(present[0])
    return _merge_dicts(present)
