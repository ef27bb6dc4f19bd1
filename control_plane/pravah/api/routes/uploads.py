"""Uploads: a file sent as the raw request body becomes a folder usable as a job source.

Why a raw body and not multipart: the browser sends the file itself
(`XMLHttpRequest.send(file)`, which reports upload progress), the name
travels in `?filename=`, and the body is streamed to disk as it arrives,
with no multipart parser and no temporary copy held in memory.

Access: operators and admins; an upload belongs to the caller's owner and
other owners get 404 for it, as for jobs (admins see all). Uploads stay
until deleted: they are the user's input, and a finished job can be run
again over them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from pravah import upload_refs
from pravah import uploads as service
from pravah.api.deps import OperatorDep, SessionDep, SettingsDep
from pravah.errors import ConflictError

router = APIRouter(prefix="/uploads", tags=["uploads"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_upload(
    caller: OperatorDep,
    request: Request,
    settings: SettingsDep,
    response: Response,
    filename: Annotated[str, Query(min_length=1, max_length=1000)],
) -> dict[str, Any]:
    """Store the body as `filename`; 201 with the id and the folder to use as a source.

    413 when the body is larger than PRAVAH_UPLOAD_MAX_BYTES (checked against
    Content-Length first, then while streaming).
    """
    length = request.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    upload = await service.store_upload(
        settings.uploads_dir,
        filename,
        request.stream(),
        settings.upload_max_bytes,
        declared_size=declared,
        owner=caller.owner,
    )
    response.headers["Location"] = f"/uploads/{upload.id}"
    return service.as_dict(upload)


@router.get("")
async def list_uploads(caller: OperatorDep, settings: SettingsDep) -> dict[str, Any]:
    """The caller's uploads, newest first, and the size limit."""
    items = service.list_uploads(settings.uploads_dir, owner=caller.owner_filter)
    return {
        "items": [service.as_dict(u) for u in items],
        "max_bytes": settings.upload_max_bytes,
    }


@router.get("/{upload_id}")
async def get_upload(caller: OperatorDep, upload_id: str, settings: SettingsDep) -> dict[str, Any]:
    """One upload."""
    return service.as_dict(
        service.get_upload(settings.uploads_dir, upload_id, owner=caller.owner_filter)
    )


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_upload(
    caller: OperatorDep, upload_id: str, settings: SettingsDep, session: SessionDep
) -> None:
    """Remove an upload and its file. 409 while an unfinished job or a
    schedule reads it or writes into it (pravah.upload_refs)."""
    upload = service.get_upload(settings.uploads_dir, upload_id, owner=caller.owner_filter)
    held_by = await upload_refs.holders(session, Path(upload.path), caller.owner_filter)
    if held_by:
        raise ConflictError(
            f"upload {upload.id} ({upload.filename}) is used by {', '.join(held_by)}; "
            "cancel or delete those first"
        )
    # Unlinking a file of gigabytes takes a while: off the event loop.
    await asyncio.to_thread(service.delete_upload, settings.uploads_dir, upload)
