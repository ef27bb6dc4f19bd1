"""Uploaded files: streamed to disk, one folder per upload, usable as job sources.

Why a folder per upload: job sources are directories, so an upload's folder
(`state_dir/uploads/<id>/`) is a ready source holding just that file. Files
are stored as sent (a ZIP stays a ZIP). The body is written chunk by chunk as
it arrives, never held whole in memory; it goes to a temporary name first and
is renamed once complete, so a cut connection or an oversized body never
leaves a partial file under its final name (the folder is removed instead).

Uploads belong to the owner of the key that sent them (kept in the folder's
`.upload.json`): others neither list nor read them, and `check_owner` stops a
job, a dry run or a schedule from naming another owner's upload folder as its
source or destination, with the same 404 as an upload that does not exist.
Uploads stored before ownership have none and are seen by admins only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import anyio

from pravah import sandbox
from pravah.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError

META_NAME = ".upload.json"
# An upload's folder is renamed to this prefix plus its id before it is
# removed: gone from listings and sources at once, even if the removal stops.
DELETING = ".deleting-"
# A folder with no finished upload in it and nothing written for this long
# is what a server stopped mid-upload left behind.
ABANDONED_AFTER = timedelta(days=1)
_FLUSH = 1024 * 1024
# Letters and digits of any script stay (`café.csv`); controls, format
# characters (a right-to-left override), slashes and quotes do not.
_UNSAFE = re.compile(r"[^\w.\- ()+]")
# An extension kept whole when a long name is shortened: `.zip`, `.tar.gz`.
_EXTENSION = re.compile(r"(\.[A-Za-z0-9]{1,10}){1,2}$")
MAX_NAME = 200


@dataclass(frozen=True)
class Upload:
    """One stored upload; `path` is its folder, a job source."""

    id: str
    filename: str
    size: int
    created_at: str
    path: str
    file: str
    uri: str
    owner: str | None = None


def safe_filename(name: str) -> str:
    """The last path component of `name` with unusual characters replaced by
    '_', shortened to MAX_NAME bytes of UTF-8 (file systems count bytes)
    with its extension kept (tasks and filters go by the extension)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE.sub("_", base).lstrip(".")
    if not base:
        raise InvalidRequestError(
            f"file name {name!r} is empty once made safe; give a plain name like 'data.csv'",
            field="filename",
        )
    if len(base.encode()) <= MAX_NAME:
        return base
    match = _EXTENSION.search(base)
    ext = match.group(0) if match else ""
    stem = base[: len(base) - len(ext)].encode()[: MAX_NAME - len(ext)]
    return stem.decode("utf-8", "ignore") + ext


async def store_upload(
    uploads_dir: Path,
    filename: str,
    body: AsyncIterator[bytes],
    max_bytes: int,
    declared_size: int | None = None,
    owner: str | None = None,
) -> Upload:
    """Write `body` to `uploads_dir/<new id>/<filename>`; PayloadTooLargeError above max_bytes."""
    name = safe_filename(filename)
    if declared_size is not None and declared_size > max_bytes:
        raise PayloadTooLargeError(
            f"the upload is {declared_size} bytes, above the limit of {max_bytes} bytes "
            "(PRAVAH_UPLOAD_MAX_BYTES)"
        )
    upload_id = str(uuid.uuid4())
    folder = uploads_dir / upload_id
    folder.mkdir(parents=True)
    final = folder / name
    temp = folder / f".{name}.part"
    size = 0
    buffer = bytearray()
    try:
        # Disk writes go to a worker thread in pieces of about _FLUSH bytes,
        # so memory stays bounded and the event loop never waits on the disk.
        with temp.open("wb") as out:
            async for piece in body:
                size += len(piece)
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"the upload is larger than the limit of {max_bytes} bytes "
                        "(PRAVAH_UPLOAD_MAX_BYTES)"
                    )
                buffer += piece
                if len(buffer) >= _FLUSH:
                    await anyio.to_thread.run_sync(out.write, bytes(buffer))
                    buffer.clear()
            await anyio.to_thread.run_sync(_finish, out, bytes(buffer))
        temp.rename(final)
        created = datetime.now(UTC).isoformat()
        (folder / META_NAME).write_text(
            json.dumps({"filename": name, "size": size, "created_at": created, "owner": owner})
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _describe(upload_id, folder, name, size, created, owner)


def _finish(out: BinaryIO, rest: bytes) -> None:
    out.write(rest)
    out.flush()
    os.fsync(out.fileno())


def _describe(
    upload_id: str, folder: Path, name: str, size: int, created: str, owner: str | None
) -> Upload:
    return Upload(
        id=upload_id,
        filename=name,
        size=size,
        created_at=created,
        path=str(folder),
        file=str(folder / name),
        uri=folder.resolve().as_uri(),
        owner=owner,
    )


def _load(folder: Path) -> Upload | None:
    try:
        meta = json.loads((folder / META_NAME).read_text())
        owner = meta.get("owner")
        return _describe(
            folder.name,
            folder,
            str(meta["filename"]),
            int(meta["size"]),
            str(meta["created_at"]),
            str(owner) if owner is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # still being written, or not an upload


def _visible(upload: Upload, owner: str | None) -> bool:
    return owner is None or upload.owner == owner


def list_uploads(uploads_dir: Path, limit: int = 100, owner: str | None = None) -> list[Upload]:
    """Complete uploads, newest first; with `owner`, only that owner's."""
    if not uploads_dir.is_dir():
        return []
    found = [
        u
        for d in uploads_dir.iterdir()
        if not d.name.startswith(".")
        and d.is_dir()
        and (u := _load(d)) is not None
        and _visible(u, owner)
    ]
    found.sort(key=lambda u: u.created_at, reverse=True)
    return found[:limit]


def get_upload(uploads_dir: Path, upload_id: str, owner: str | None = None) -> Upload:
    """One upload by id, or NotFoundError (also for another `owner`'s upload)."""
    with contextlib.suppress(ValueError):
        found = _load(uploads_dir / str(uuid.UUID(upload_id)))
        if found is not None and _visible(found, owner):
            return found
    raise NotFoundError(f"no upload with id {upload_id!r}")


def delete_upload(uploads_dir: Path, upload: Upload) -> None:
    """Removes `upload`: renamed out of sight first (atomic), then removed.
    What a failed removal leaves is swept by `remove_abandoned`."""
    doomed = uploads_dir / f"{DELETING}{upload.id}"
    try:
        Path(upload.path).rename(doomed)
    except FileNotFoundError:  # a delete of the same upload got there first
        raise NotFoundError(f"no upload with id {upload.id!r}") from None
    shutil.rmtree(doomed, ignore_errors=True)


def remove_abandoned(uploads_dir: Path, now: datetime) -> list[str]:
    """Removes what no request will finish: folders of deletes that stopped
    part way, and folders of uploads cut off by a server stop (no upload in
    them, nothing written for ABANDONED_AFTER). Returns the folder names."""
    removed: list[str] = []
    if not uploads_dir.is_dir():
        return removed
    cutoff = (now - ABANDONED_AFTER).timestamp()
    for folder in uploads_dir.iterdir():
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            # A stat, not a read of the metadata: a finished upload whose
            # metadata cannot be parsed is kept, never taken for a cut one.
            doomed = folder.name.startswith(DELETING) or (
                not (folder / META_NAME).exists() and _last_write(folder) < cutoff
            )
        except OSError:  # removed meanwhile
            continue
        if doomed:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _last_write(folder: Path) -> float:
    """The newest modification time of `folder` and the files directly in it."""
    return max(
        [
            folder.stat().st_mtime,
            *(f.stat(follow_symlinks=False).st_mtime for f in folder.iterdir()),
        ]
    )


def local_path_of(text: str, what: str) -> Path | None:
    """The resolved local path a job path names; None for s3:// and other
    remote URIs (never an upload) and for text that is no valid path."""
    try:
        text = sandbox.check_text(text, what)
        if "://" in text and not text.startswith("file://"):
            return None
        return sandbox.local_path(text, what)
    except InvalidRequestError:
        return None


def check_owner(text: str | None, uploads_dir: Path, owner: str | None, what: str) -> None:
    """Refuse a job path `text` that reaches into uploads `owner` may not see.

    A path inside an upload's folder must name one of `owner`'s uploads
    (NotFoundError otherwise, as for a missing upload); a path that is the
    uploads folder or holds it would read every owner's uploads and is
    refused. `owner` None (admins, auth off) may name any upload. Runs
    before the source's existence is checked, so the answer for a foreign
    upload's folder or file is the same as for one that does not exist.
    """
    if owner is None or text is None:
        return
    path = local_path_of(text, what)
    if path is None:
        return  # remote, or invalid: the caller's own validation reports it
    root = uploads_dir.expanduser().resolve()
    if path.is_relative_to(root) and path != root:
        get_upload(uploads_dir, path.relative_to(root).parts[0], owner)
    elif root.is_relative_to(path):
        raise InvalidRequestError(
            f"{what} {text!r} holds the uploads folder {str(root)!r}; name one upload's "
            "folder (its 'path' from POST /uploads) instead",
            field=what,
        )


def as_dict(upload: Upload) -> dict[str, object]:
    """JSON-ready form."""
    return asdict(upload)
