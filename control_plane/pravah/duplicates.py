"""Duplicate groups of a `hash` job over all its files, from its result lines.

Why: a job is processed in chunks (pravah.engine_pool), each with its own
engine summary, and a chunk's summary groups only its own files. Two copies
that fell into different chunks (10,000 files each by default) were never
a group, and merging the summaries cannot find them: a chunk lists only its
groups of more than one file. So a hash job of several chunks is regrouped
here from every file's result line, the engine's rules unchanged (see the
engine's `tasks/hash.rs`): files with one size and hash are one group;
names of one inode (hard links, followed symlinks) are one copy; a group
wastes its size for each copy beyond the first; its example is its first
path in order.

Memory stays small whatever the job's size: a first pass keeps one 64-bit
key per line in an array and sorts a copy; the second groups in full only
the lines whose key was seen more than once.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# The engine's hash::MAX_GROUPS: most groups listed, largest waste first.
MAX_GROUPS = 100
_KEY_BITS = 64


@dataclass
class _Group:
    files: int = 0
    # One entry per copy: its inode, or for a file without one (an object)
    # its own path.
    copies: set[str] = field(default_factory=set)
    example: str | None = None


# Keys are 63 bits, so that NO_KEY is none of them.
_MASK = (1 << (_KEY_BITS - 1)) - 1
NO_KEY = 1 << (_KEY_BITS - 1)


def _key_of(size: int, digest: bytes | str) -> int:
    """A 63-bit key of (size, hash): the hash's first 64 bits mixed with the
    size. Equal files have equal keys; two different files share one about
    once in 2^63 pairs."""
    return (int(digest[: _KEY_BITS // 4], 16) ^ (size * 0x9E3779B97F4A7C15)) & _MASK


def _key(raw: bytes) -> int | None:
    """The key of a hash result line, or None for another line.

    The engine writes its lines compactly (`"size":12,...,"hash":"ab..."`),
    so both fields are found with `bytes.find`, without parsing the line: a
    JSON-escaped path cannot hold them, its quotes being escaped. A line
    written otherwise is parsed.
    """
    at = raw.find(b'"hash":"')
    size_at = raw.find(b'"size":')
    if at >= 0 and size_at >= 0:
        end = raw.find(b",", size_at)
        try:
            return _key_of(int(raw[size_at + 7 : end]), raw[at + 8 : at + 8 + _KEY_BITS // 4])
        except ValueError:
            pass
    if b'"hash"' not in raw:
        return None
    found = _hashed(raw)
    return None if found is None else _key_of(found[0], found[1])


def _hashed(raw: bytes) -> tuple[int, str, str | None, str] | None:
    """(size, hash, inode, path) of a successful hash result line, else None."""
    line = json.loads(raw)
    if not isinstance(line, dict) or line.get("error"):
        return None
    size, digest, path = line.get("size"), line.get("hash"), line.get("path")
    if not isinstance(size, int) or not isinstance(digest, str) or not isinstance(path, str):
        return None
    inode = line.get("inode")
    return size, digest, inode if isinstance(inode, str) else None, path


def regroup(summary: dict[str, Any], lines: Callable[[], Iterable[bytes]]) -> dict[str, Any]:
    """`summary` with its duplicate figures computed over every line of `lines()`.

    `lines` is called twice (two passes over the results). The other fields
    (files, failed, bytes, algorithm, ...) are kept as merged.
    """
    # One key per line, in line order (NO_KEY for a line of no hash), so
    # the second pass reads the key instead of finding it again.
    keys = array("Q", (NO_KEY if (k := _key(raw)) is None else k for raw in lines()))
    distinct_keys = 0
    repeated: set[int] = set()
    previous: int | None = None
    for key in sorted(keys):
        if key == NO_KEY:
            break  # sorted last
        if key != previous:
            distinct_keys += 1
        else:
            repeated.add(key)
        previous = key

    groups: dict[tuple[int, str], _Group] = {}
    for raw, key in zip(lines(), keys, strict=False):
        if key not in repeated:
            continue
        found = _hashed(raw)
        if found is None:
            continue
        size, digest, inode, path = found
        group = groups.setdefault((size, digest), _Group())
        group.files += 1
        group.copies.add(f"inode {inode}" if inode is not None else f"path {path}")
        if group.example is None or path < group.example:
            group.example = path

    dups = [
        (size * (len(g.copies) - 1), g.files, size, digest, g.example)
        for (size, digest), g in groups.items()
        if len(g.copies) > 1
    ]
    dups.sort(key=lambda d: (-d[0], d[3]))
    # Two contents whose keys collide count as one distinct content (their
    # groups stay apart); at 63 bits that needs billions of files.
    out = dict(summary)
    out.update(
        distinct=distinct_keys,
        duplicate_groups=len(dups),
        duplicate_files=sum(d[1] for d in dups),
        wasted_bytes=sum(d[0] for d in dups),
        duplicates=[
            {"hash": h, "files": n, "size": size, "wasted_bytes": w, "example": ex}
            for w, n, size, h, ex in dups[:MAX_GROUPS]
        ],
    )
    return out
