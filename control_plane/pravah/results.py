"""Reading a job's per-file results from its part files.

Why files and not rows: a job over a million files would need a million
rows; the engine instead writes one JSON-lines part file per processed batch
(atomically), and the runner records a small manifest (`parts.json`: part
path and line count, sorted by work item and batch) in the workspace. A page
at `offset` then opens only the part files it overlaps, skipping the others
by their counts, and `format=jsonl` streams the files back to back.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pravah.settings import Settings

MANIFEST_NAME = "parts.json"
RESULTS_DIR_NAME = "results"


@dataclass(frozen=True)
class Part:
    """One results part file and how many result lines it holds."""

    path: str
    files: int
    work_id: str = ""
    sequence: int = 0


def uri_to_path(uri: str, base: Path | None = None) -> Path:
    """A local path from a part URI (file:// or a plain, possibly relative, path)."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    path = Path(uri)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def write_manifest(workspace: Path, parts: list[Part]) -> Path:
    """Write the manifest atomically (temp file + rename), sorted by work item and batch."""
    ordered = sorted(parts, key=lambda p: (p.work_id, p.sequence, p.path))
    target = workspace / MANIFEST_NAME
    tmp = workspace / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps({"parts": [asdict(p) for p in ordered]}), "utf-8")
    os.replace(tmp, target)
    return target


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def load_parts(workspace: Path) -> list[Part] | None:
    """The parts of a job's results, or None when it has none yet.

    Uses the manifest; without one (older or interrupted runs) it falls back
    to the sorted part files of results/ with counted lines.
    """
    manifest = workspace / MANIFEST_NAME
    if manifest.is_file():
        data = json.loads(manifest.read_text("utf-8"))
        return [Part(**p) for p in data.get("parts", [])]
    results_dir = workspace / RESULTS_DIR_NAME
    if not results_dir.is_dir():
        return None
    files = sorted(p for p in results_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    return [Part(path=str(p), files=_count_lines(p)) for p in files]


def total_results(parts: list[Part]) -> int:
    """Number of per-file results over all parts."""
    return sum(p.files for p in parts)


def _read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield line if line.endswith(b"\n") else line + b"\n"


def read_page(parts: list[Part], limit: int, offset: int, workspace: Path) -> list[dict[str, Any]]:
    """Results [offset, offset+limit) in manifest order; whole parts before offset are skipped."""
    items: list[dict[str, Any]] = []
    position = 0
    base = workspace / RESULTS_DIR_NAME
    for part in parts:
        if len(items) >= limit:
            break
        if position + part.files <= offset:
            position += part.files  # skip the whole file unopened
            continue
        for index, line in enumerate(_read_lines(uri_to_path(part.path, base))):
            if position + index < offset:
                continue
            items.append(json.loads(line))
            if len(items) >= limit:
                break
        position += part.files
    return items


def iter_jsonl(parts: list[Part], workspace: Path) -> Iterator[bytes]:
    """Every result line of every part, in order, newline-terminated."""
    base = workspace / RESULTS_DIR_NAME
    for part in parts:
        path = uri_to_path(part.path, base)
        if path.is_file():
            yield from _read_lines(path)


async def iter_lines(settings: Settings, job_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every per-file result object of a job, in order (nothing when it has no results).

    Reads the job's workspace under settings.state_dir; for the CLI's
    `--output` and error listing.
    """
    workspace = settings.jobs_dir / job_id
    parts = load_parts(workspace)
    if parts is None:
        return
    for line in iter_jsonl(parts, workspace):
        yield json.loads(line)
