"""What a job-store error means: a restart worth waiting for, or a full disk."""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import pytest
from pravah.db import retrying, store_full
from sqlalchemy.exc import OperationalError


def _sqlalchemy(message: str) -> OperationalError:
    return OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))


def test_full_disks_are_told_apart_from_other_store_errors() -> None:
    assert store_full(_sqlalchemy("database or disk is full")) == "database or disk is full"
    assert store_full(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on device"
    )
    pg = _sqlalchemy('could not extend file "base/16384/2619": No space left on device')
    assert store_full(pg) == "no space left on device"
    # Found through the chain of causes, as the runner's wrapped errors have it.
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("writing the chunk") from inner
    except RuntimeError as outer:
        assert store_full(outer) == "no space left on device"
    assert store_full(_sqlalchemy("database is locked")) is None
    assert store_full(OSError(errno.ECONNREFUSED, "Connection refused")) is None


async def test_retrying_waits_out_an_unreachable_store_but_not_a_full_one() -> None:
    calls = {"refused": 0, "full": 0}

    async def refused_once() -> str:
        calls["refused"] += 1
        if calls["refused"] == 1:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        return "written"

    async def full() -> str:
        calls["full"] += 1
        raise _sqlalchemy("database or disk is full")

    assert await retrying(refused_once, within=5) == "written"
    with pytest.raises(OperationalError):
        await asyncio.wait_for(retrying(full, within=30), timeout=5)
    assert calls == {"refused": 2, "full": 1}
