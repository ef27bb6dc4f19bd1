"""The endpoints behind the web dashboard: uploads, dry run, errors, outputs, pages.

Run in-process (httpx's ASGI transport) with a real engine on SQLite; the
live `/events/jobs` stream is checked by the browser tests against a real
server, since the ASGI transport buffers whole responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from api_helpers import api_client
from pravah.settings import Settings

if TYPE_CHECKING:
    from conftest import CsvTree


@pytest.fixture
async def api(sqlite_settings: Settings, engine_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "upload_max_bytes": 1000}
    )
    async with api_client(settings) as client:
        yield client


async def _finished(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_upload_is_stored_as_sent_and_usable_as_a_job_source(
    api: httpx.AsyncClient, sqlite_settings: Settings
) -> None:
    body = b"id,name\n1,a\n"
    resp = await api.post("/uploads", params={"filename": "../../people.csv"}, content=body)
    assert resp.status_code == 201, resp.text
    upload = resp.json()
    assert resp.headers["location"] == f"/uploads/{upload['id']}"
    assert upload["filename"] == "people.csv"  # path parts dropped
    assert upload["size"] == len(body)
    folder = Path(upload["path"])
    assert folder.parent == sqlite_settings.uploads_dir
    assert (folder / "people.csv").read_bytes() == body
    assert upload["uri"] == folder.resolve().as_uri()  # noqa: ASYNC240
    listed = (await api.get("/uploads")).json()
    assert [u["id"] for u in listed["items"]] == [upload["id"]]
    assert listed["max_bytes"] == 1000
    assert (await api.get(f"/uploads/{upload['id']}")).json() == upload
    assert (await api.get("/uploads/not-an-id")).status_code == 404

    job = (await api.post("/jobs", json={"source": upload["uri"], "task": "csv-header"})).json()
    done = await _finished(api, job["id"])
    assert done["status"] == "completed"
    assert done["summary"]["schemas"][0]["columns"] == ["id", "name"]


async def test_zip_upload_is_kept_as_is(api: httpx.AsyncClient) -> None:
    data = b"PK\x03\x04" + bytes(100)
    upload = (await api.post("/uploads", params={"filename": "a.zip"}, content=data)).json()
    assert Path(upload["file"]).read_bytes() == data  # noqa: ASYNC240


async def test_upload_above_the_limit_is_413_and_leaves_nothing(
    api: httpx.AsyncClient, sqlite_settings: Settings
) -> None:
    resp = await api.post("/uploads", params={"filename": "big.bin"}, content=b"x" * 1001)
    assert resp.status_code == 413
    assert "1000 bytes" in resp.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(5):
            yield b"y" * 300

    resp = await api.post("/uploads", params={"filename": "big.bin"}, content=chunks())
    assert resp.status_code == 413
    uploads = sqlite_settings.uploads_dir
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_upload_needs_a_usable_file_name(api: httpx.AsyncClient) -> None:
    resp = await api.post("/uploads", params={"filename": "..."}, content=b"x")
    assert resp.status_code == 422
    assert resp.json()["field"] == "filename"
    assert (await api.post("/uploads", content=b"x")).status_code == 422
    # A long name keeps its extension, which tasks and filters go by, and
    # fits a file system's 255 bytes; letters of any script stay.
    for name, kept in (
        ("r" * 230 + ".zip", "r" * 196 + ".zip"),
        ("日本" * 100 + ".tar.gz", "日本" * 32 + ".tar.gz"),
        ("café\u202e.csv", "café_.csv"),
    ):
        resp = await api.post("/uploads", params={"filename": name}, content=b"x")
        assert resp.status_code == 201, resp.text
        assert resp.json()["filename"] == kept


async def test_an_upload_is_deleted_once_no_unfinished_job_or_schedule_needs_it(
    sqlite_settings: Settings, engine_url: str
) -> None:
    # No worker: a job stays pending, as one queued behind others would.
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url], "run_worker": False})
    async with api_client(settings) as api:
        upload = (
            await api.post("/uploads", params={"filename": "a.csv"}, content=b"a,b\n1,2\n")
        ).json()
        folder = Path(upload["path"])
        job = (await api.post("/jobs", json={"source": upload["uri"], "task": "csv-header"})).json()
        schedule = await api.post(
            "/schedules",
            json={
                "name": "nightly",
                "cron": "0 3 * * *",
                "job": {"source": upload["path"], "task": "csv-header"},
            },
        )
        assert schedule.status_code == 201, schedule.text

        refused = await api.delete(f"/uploads/{upload['id']}")
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert f"job {job['id']}" in detail and "schedule 'nightly'" in detail
        assert (folder / "a.csv").is_file()  # nothing lost

        await api.post(f"/jobs/{job['id']}/cancel")
        await api.delete(f"/schedules/{schedule.json()['id']}")
        gone = await api.delete(f"/uploads/{upload['id']}")
        assert gone.status_code == 204, gone.text
        assert not folder.exists()  # noqa: ASYNC240
        assert list(settings.uploads_dir.iterdir()) == []
        assert (await api.get(f"/uploads/{upload['id']}")).status_code == 404
        assert (await api.get("/uploads")).json()["items"] == []
        assert (await api.delete(f"/uploads/{upload['id']}")).status_code == 404
        # Ids are never paths.
        for hostile in ("..%2F..%2Fjobs", "%2Fetc", ".deleting-x", "x" * 300):
            assert (await api.delete(f"/uploads/{hostile}")).status_code == 404, hostile


async def test_dry_run_counts_files_and_bytes_without_storing_a_job(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    request = {"source": str(csv_tree.root), "task": "csv-header"}
    resp = await api.post("/jobs/dry-run", json=request)
    assert resp.status_code == 200, resp.text
    preview = resp.json()
    visible = [p for p in csv_tree.root.rglob("*") if p.is_file() and ".hidden" not in p.parts]
    assert preview["files"] == len(visible)
    assert preview["bytes"] == sum(p.stat().st_size for p in visible)
    assert len(preview["examples"]) == min(10, len(visible))
    assert all(e["size"] is not None for e in preview["examples"])
    filtered = {**request, "filters": {"include": ["nested/**"]}}
    nested = [p for p in visible if p.is_relative_to(csv_tree.root / "nested")]
    assert (await api.post("/jobs/dry-run", json=filtered)).json()["files"] == len(nested)
    assert (await api.get("/jobs")).json()["total"] == 0


async def test_api_errors_name_the_field_at_fault(api: httpx.AsyncClient, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"source": str(tmp_path / "nope"), "task": "csv-header"}, "source"),
        ({"source": str(tmp_path), "task": "no-such-task"}, "task"),
        (
            {"source": str(tmp_path), "task": "csv-header", "options": {"max_header_bytes": 0}},
            "options.max_header_bytes",
        ),
        ({"source": str(tmp_path), "task": "csv-header", "options": {"bogus": 1}}, "options"),
    ]
    for path in ("/jobs", "/jobs/dry-run"):
        for body, field in cases:
            resp = await api.post(path, json=body)
            assert resp.status_code == 422, (path, body, resp.text)
            assert resp.json()["field"] == field, (path, resp.json())
    resp = await api.post(
        "/jobs", json={"source": str(tmp_path), "task": "csv-header", "filters": {"min_size": "x"}}
    )
    assert resp.json()["errors"][0]["loc"] == ["body", "filters", "min_size"]


async def test_errors_list_paths_and_messages_of_failed_files(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    job = (
        await api.post("/jobs", json={"source": str(csv_tree.root), "task": "csv-header"})
    ).json()
    done = await _finished(api, job["id"])
    page = (await api.get(f"/jobs/{job['id']}/errors")).json()
    assert page["total"] == done["progress"]["files_failed"] == len(csv_tree.failing)
    assert {e["path"] for e in page["items"]} == csv_tree.failing
    assert all(e["error"] and e["error_kind"] for e in page["items"])
    assert len((await api.get(f"/jobs/{job['id']}/errors?limit=1")).json()["items"]) == 1


async def test_output_files_are_served_only_from_inside_the_job(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    job = (
        await api.post("/jobs", json={"source": str(csv_tree.root), "task": "csv-header"})
    ).json()
    await _finished(api, job["id"])
    ok = await api.get(f"/jobs/{job['id']}/output", params={"path": "parts.json"})
    assert ok.status_code == 200
    for bad in ("../../pravah.db", "/etc/passwd", str(csv_tree.root / "plain.csv")):
        resp = await api.get(f"/jobs/{job['id']}/output", params={"path": bad})
        assert resp.status_code == 404, bad


async def test_dashboard_pages_and_assets_are_served_locally(api: httpx.AsyncClient) -> None:
    root = await api.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/ui/"
    page = await api.get("/ui/")
    assert page.status_code == 200
    assert '<script type="module" src="/ui/static/js/app.js">' in page.text
    for asset in ("app.css", "js/app.js", "js/api.js", "js/pages/detail.js", "js/results.js"):
        resp = await api.get(f"/ui/static/{asset}")
        assert resp.status_code == 200, asset
        assert "https://" not in resp.text.replace("https://json-schema.org", ""), asset
