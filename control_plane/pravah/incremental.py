"""Narrowing a job's listing: incremental runs of a lineage, and retries of
exactly the files that failed.

Why here and not in the engine: both are decisions about *which* files a job
covers, made from the control plane's own records, and both work on the
listing's chunk files (the engine's format, `{"p", "s", "m", "b"}` per line)
so the rest of the run (checkpoints, engines, results) is the same as for
any job.

Incremental mode (`lineage` + `incremental`): a fingerprint manifest lives in
`state_dir/lineages/<lineage>/fingerprints.json` (path -> size, mtime, and a
content hash in "hash" mode). A run keeps only files whose path is not in the
manifest (a file copied in with an old mtime is new by its path), or whose
size or mtime changed, or - in "hash" mode - whose content hash changed. The
manifest is updated (atomically) only when a run completes, with the files
it processed successfully, so a failed run or a failed file is tried again
next time.

Retry of failed files (`retry_of`): the new job's chunks are the failed
result lines of the earlier job, with their exact raw path bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pravah.engine_client import ChunkInfo
from pravah.results import iter_jsonl, load_parts

MANIFEST = "fingerprints.json"
_CHUNK_FILES = 5000


def lineage_dir(state_dir: Path, lineage: str) -> Path:
    """Where a lineage's fingerprint manifest lives (the name made file-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in lineage)
    digest = hashlib.sha256(lineage.encode()).hexdigest()[:8]
    return state_dir / "lineages" / f"{safe}-{digest}"


def load_manifest(state_dir: Path, lineage: str) -> dict[str, list[Any]]:
    """path -> [size, mtime_ns, hash or None] of the lineage's last successful runs."""
    path = lineage_dir(state_dir, lineage) / MANIFEST
    if not path.is_file():
        return {}
    data = json.loads(path.read_text("utf-8"))
    files = data.get("files", {})
    return files if isinstance(files, dict) else {}


def save_manifest(state_dir: Path, lineage: str, files: dict[str, list[Any]]) -> None:
    """Write the manifest atomically (temp file + rename)."""
    folder = lineage_dir(state_dir, lineage)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"lineage": lineage, "files": files}), "utf-8")
    os.replace(tmp, folder / MANIFEST)


def _key(entry: dict[str, Any]) -> str:
    return str(entry.get("b") or entry["p"])


def _rel_bytes(entry: dict[str, Any]) -> bytes:
    raw = entry.get("b")
    return base64.b64decode(raw) if raw else str(entry["p"]).encode()


def content_hash(path: Path) -> str:
    """BLAKE2b of a file's content, streamed."""
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_chunk(uri: str) -> Iterator[dict[str, Any]]:
    """The entries of one chunk file."""
    path = Path(uri.removeprefix("file://"))
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_chunks(chunk_dir: Path, entries: list[dict[str, Any]]) -> list[ChunkInfo]:
    """Rewrite a listing as chunk files holding exactly `entries`."""
    for old in chunk_dir.glob("chunk-*.jsonl"):
        old.unlink()
    chunk_dir.mkdir(parents=True, exist_ok=True)
    out: list[ChunkInfo] = []
    for index, start in enumerate(range(0, len(entries), _CHUNK_FILES)):
        part = entries[start : start + _CHUNK_FILES]
        path = chunk_dir / f"chunk-{index:06d}.jsonl"
        tmp = chunk_dir / f".chunk-{index:06d}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(e) + "\n" for e in part), "utf-8")
        os.replace(tmp, path)
        out.append(
            ChunkInfo(
                index=index,
                uri=str(path),
                files=len(part),
                bytes=sum(int(e.get("s") or 0) for e in part),
            )
        )
    return out


def select_changed(
    chunks: list[ChunkInfo], root: Path, manifest: dict[str, list[Any]], mode: str
) -> tuple[list[dict[str, Any]], int]:
    """Entries new or changed against the manifest, and how many were skipped."""
    keep: list[dict[str, Any]] = []
    skipped = 0
    for chunk in chunks:
        for entry in read_chunk(chunk.uri):
            seen = manifest.get(_key(entry))
            size, mtime = entry.get("s"), entry.get("m")
            if seen is None or seen[0] != size or seen[1] != mtime:
                keep.append(entry)
                continue
            if mode == "hash":
                path = root / os.fsdecode(_rel_bytes(entry))
                try:
                    if content_hash(path) != (seen[2] if len(seen) > 2 else None):
                        keep.append(entry)
                        continue
                except OSError:
                    keep.append(entry)  # the engine reports why it cannot be read
                    continue
            skipped += 1
    return keep, skipped


def updated_manifest(
    manifest: dict[str, list[Any]],
    processed: list[dict[str, Any]],
    failed: set[str],
    root: Path,
    mode: str,
) -> dict[str, list[Any]]:
    """The manifest after a successful run: its processed files, failed ones left out."""
    out = dict(manifest)
    for entry in processed:
        key = _key(entry)
        if key in failed:
            out.pop(key, None)
            continue
        digest = None
        if mode == "hash":
            try:
                digest = content_hash(root / os.fsdecode(_rel_bytes(entry)))
            except OSError:
                continue
        out[key] = [entry.get("s"), entry.get("m"), digest]
    return out


def failed_keys(workspace: Path) -> set[str]:
    """Keys (raw path b64, else path) of the failed result lines of a job."""
    return {_result_key(line) for line in _result_lines(workspace) if line.get("error") is not None}


def _result_key(line: dict[str, Any]) -> str:
    return str(line.get("raw_path_b64") or line["path"])


def _result_lines(workspace: Path) -> Iterator[dict[str, Any]]:
    parts = load_parts(workspace)
    if not parts:
        return
    for raw in iter_jsonl(parts, workspace):
        yield json.loads(raw)


def failed_entries(workspace: Path) -> list[dict[str, Any]]:
    """Chunk entries for exactly the files that failed in a job (exact raw paths)."""
    out: list[dict[str, Any]] = []
    for line in _result_lines(workspace):
        if line.get("error") is None:
            continue
        entry: dict[str, Any] = {"p": line["path"]}
        if line.get("raw_path_b64"):
            entry["b"] = line["raw_path_b64"]
        out.append(entry)
    return out
