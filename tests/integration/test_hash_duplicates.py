"""A hash job's duplicate groups span its chunks; hard links and symlinks waste nothing.

Each chunk of a job has its own engine summary, which groups only that
chunk's files; the job's groups are recomputed over all its results
(pravah.duplicates). These run the real engine with chunks of three files,
and against a run of one chunk, whose summary is the engine's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pravah.cli.options import build_job_request
from pravah.cli.render import JobProgress
from pravah.cli.run import run_embedded
from pravah.settings import Settings

COPY = b"the same bytes in three places\n"


def _tree(root: Path) -> Path:
    for folder in ("a", "b", "c", "d", "z"):
        (root / folder).mkdir(parents=True)
    for i, folder in enumerate(("a", "b", "c")):
        (root / folder / f"copy{i}.txt").write_bytes(COPY)
    # Two more names of a's copy: one copy, three names.
    os.link(root / "a" / "copy0.txt", root / "z" / "link1.txt")
    os.link(root / "a" / "copy0.txt", root / "d" / "link2.txt")
    # A symlink followed into the tree is one more name of it.
    (root / "z" / "alias.txt").symlink_to("../b/copy1.txt")
    for i in range(8):
        (root / "d" / f"unique{i}.txt").write_bytes(b"unique %d\n" % i)
    return root


async def _summary(settings: Settings, source: Path, chunk_files: int) -> dict[str, Any]:
    outcome = await run_embedded(
        build_job_request(source=str(source), task=["hash"], follow_symlinks=True),
        settings.model_copy(update={"chunk_files": chunk_files}),
        engine_url=None,
        progress=JobProgress(enabled=False),
        output=None,
        want_errors=False,
    )
    job = outcome.job
    assert job["status"] == "completed", job["error"]
    summary = dict(job["summary"])
    listing = summary.pop("listing")
    return {"chunks": listing["chunks"], **summary}


async def test_copies_in_different_chunks_are_one_group_and_links_one_copy(
    sqlite_settings: Settings, engine_bin: Path, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"engine_bin": engine_bin})
    source = _tree(tmp_path / "src")
    chunked = await _summary(settings, source, chunk_files=3)
    assert chunked["chunks"] == 5
    assert chunked["files"] == 14
    assert chunked["distinct"] == 9  # the copies' content and 8 unique files
    assert chunked["duplicate_groups"] == 1
    (group,) = chunked["duplicates"]
    # 6 names, 3 copies: removing the two extra copies frees their bytes;
    # removing a hard link or the symlink frees nothing.
    assert group["files"] == 6
    assert group["size"] == len(COPY)
    assert group["wasted_bytes"] == chunked["wasted_bytes"] == 2 * len(COPY)
    assert group["example"] == "a/copy0.txt"

    whole = await _summary(settings, source, chunk_files=0)
    assert whole["chunks"] == 1
    assert {**whole, "chunks": 5} == chunked
