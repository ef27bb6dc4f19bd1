"""The hostile-input corpus (tests/corpus/hostile_paths.txt) in every string field.

Every entry goes into each string the API accepts: job source, destination,
task, option values, filter globs and extensions, job ids in paths, the
output `path` query, upload file names, key names. Each request must end in
a clear 4xx (or, where the input is harmless, a success that stays inside
its sandbox) and never a 5xx; nothing may be read or written outside the
allowed root, the uploads folder or the job workspaces.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from api_helpers import api_client
from pravah.settings import Settings

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "hostile_paths.txt"


def load_corpus() -> list[str]:
    entries = []
    for line in CORPUS.read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        line = line.replace("{LONG}", "a/" * 2500).replace("{NAME300}", "n" * 300)
        line = line.replace("\\0", "\x00").replace("\\t", "\t").replace("\\n", "\n")
        entries.append(line)
    return entries


HOSTILE = load_corpus()


@pytest.fixture
async def setup(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path, str]]:
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "outside.txt").write_text("top secret\n")
    settings = db_settings.model_copy(
        update={"engine_urls": [engine_url], "allowed_roots": [root], "upload_max_bytes": 100}
    )
    async with api_client(settings) as client:
        job = (
            await client.post("/jobs", json={"source": str(root / "data"), "task": "csv-header"})
        ).json()
        for _ in range(300):
            got = (await client.get(f"/jobs/{job['id']}")).json()
            if got["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        yield client, tmp_path, job["id"]


def _ok_or_4xx(resp: httpx.Response, what: str) -> None:
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body.get("detail"), str) and body["detail"], (what, body)


async def test_hostile_strings_in_every_field_get_4xx_never_5xx(
    setup: tuple[httpx.AsyncClient, Path, str],
) -> None:
    client, base, job_id = setup
    good = str(base / "root" / "data")
    before = sorted(p.name for p in base.iterdir())
    for bad in HOSTILE:
        # Paths: always refused (outside the root, malformed, NUL, too long).
        resp = await client.post("/jobs", json={"source": bad, "task": "csv-header"})
        _ok_or_4xx(resp, f"source {bad!r}")
        assert resp.status_code == 422, (bad, resp.text)
        resp = await client.post("/jobs/dry-run", json={"source": bad, "task": "csv-header"})
        assert resp.status_code == 422, (bad, resp.text)
        resp = await client.post(
            "/jobs", json={"source": good, "task": "csv-header", "destination": bad}
        )
        assert resp.status_code == 422, (bad, resp.text)
        # Other strings: a 4xx with a message, never a crash.
        bodies: list[dict[str, Any]] = [
            {"source": good, "task": bad},
            {"source": good, "task": "csv-header", "options": {"delimiter": bad}},
            {"source": good, "task": "csv-header", "options": {bad: ","}},
            {"source": good, "task": "csv-header", "filters": {"include": [bad]}},
            {"source": good, "task": "csv-header", "filters": {"exclude": [bad]}},
            {"source": good, "task": "csv-header", "filters": {"extensions": [bad]}},
        ]
        for body in bodies:
            resp = await client.post("/jobs/dry-run", json=body)
            _ok_or_4xx(resp, f"dry-run {body}")
        for path in (f"/jobs/{quote(bad, safe='')}", f"/jobs/{quote(bad, safe='')}/results"):
            resp = await client.get(path)
            # 404, or a redirect of a path FastAPI normalizes; never the job list.
            assert resp.status_code in (307, 404, 405, 422), (bad, resp.status_code)
        # A job's output: only files inside its workspace or destination.
        resp = await client.get(f"/jobs/{job_id}/output", params={"path": bad})
        assert resp.status_code in (404, 422), (bad, resp.status_code, resp.text[:200])
        resp = await client.post("/uploads", params={"filename": bad}, content=b"a,b\n")
        _ok_or_4xx(resp, f"upload {bad!r}")
        if resp.status_code == 201:
            stored = Path(resp.json()["path"]) if "path" in resp.json() else None
            if stored is not None:
                assert stored.resolve().is_relative_to((base / "state" / "uploads").resolve())
        resp = await client.post("/keys", json={"name": bad, "role": "viewer"})
        _ok_or_4xx(resp, f"key name {bad!r}")
    # The escape targets were never touched, and nothing new appeared beside them.
    assert (base / "outside.txt").read_text() == "top secret\n"
    assert sorted(p.name for p in base.iterdir()) == before
    assert "pwned" not in os.listdir("/tmp")


async def test_output_never_serves_files_outside_the_job(
    setup: tuple[httpx.AsyncClient, Path, str],
) -> None:
    client, base, job_id = setup
    for path in (
        str(base / "outside.txt"),
        "../../outside.txt",
        f"file://{base / 'outside.txt'}",
        "/etc/passwd",
        "%2e%2e/%2e%2e/outside.txt",
    ):
        resp = await client.get(f"/jobs/{job_id}/output", params={"path": path})
        assert resp.status_code == 404, (path, resp.status_code)
        assert "top secret" not in resp.text
