"""What a stopped server or a stopped delete leaves in the uploads folder is
removed by the worker's sweep; finished uploads and uploads still being
written are left alone."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pravah.errors import NotFoundError
from pravah.uploads import (
    ABANDONED_AFTER,
    DELETING,
    delete_upload,
    list_uploads,
    remove_abandoned,
    store_upload,
)


def _aged(path: Path, age: timedelta, now: datetime) -> None:
    stamp = (now - age).timestamp()
    for p in [*path.rglob("*"), path]:
        os.utime(p, (stamp, stamp), follow_symlinks=False)


def test_abandoned_and_half_deleted_folders_are_removed_and_nothing_else(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    uploads = tmp_path / "uploads"
    old = ABANDONED_AFTER + timedelta(hours=1)

    finished = uploads / "11111111-1111-1111-1111-111111111111"
    finished.mkdir(parents=True)
    (finished / "a.csv").write_text("a\n")
    meta = {"filename": "a.csv", "size": 2, "created_at": now.isoformat(), "owner": None}
    (finished / ".upload.json").write_text(json.dumps(meta))
    _aged(finished, timedelta(days=400), now)

    cut_off = uploads / "22222222-2222-2222-2222-222222222222"
    cut_off.mkdir()
    (cut_off / ".big.zip.part").write_bytes(b"PK" * 10)
    _aged(cut_off, old, now)

    arriving = uploads / "33333333-3333-3333-3333-333333333333"
    arriving.mkdir()
    (arriving / ".big.zip.part").write_bytes(b"PK")
    _aged(arriving, old, now)
    (arriving / ".big.zip.part").write_bytes(b"PK" * 2)  # still being written

    half_deleted = uploads / f"{DELETING}44444444-4444-4444-4444-444444444444"
    half_deleted.mkdir()
    (half_deleted / "b.csv").write_text("b\n")
    (half_deleted / ".upload.json").write_text(json.dumps(meta))

    outside = tmp_path / "keep"
    outside.mkdir()
    (uploads / "link").symlink_to(outside, target_is_directory=True)
    _aged(outside, timedelta(days=400), now)

    removed = remove_abandoned(uploads, now)

    assert sorted(removed) == sorted([cut_off.name, half_deleted.name])
    assert sorted(p.name for p in uploads.iterdir()) == sorted(
        [finished.name, arriving.name, "link"]
    )
    assert outside.is_dir()
    assert [u.filename for u in list_uploads(uploads)] == ["a.csv"]


def test_a_missing_uploads_folder_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_abandoned(tmp_path / "none", datetime.now(UTC)) == []


def test_a_second_delete_of_the_same_upload_is_not_found(tmp_path: Path) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a,b\n"

    uploads = tmp_path / "uploads"
    upload = asyncio.run(store_upload(uploads, "a.csv", body(), max_bytes=100))
    delete_upload(uploads, upload)  # the first of two racing deletes
    with pytest.raises(NotFoundError):
        delete_upload(uploads, upload)
    assert list(uploads.iterdir()) == []
