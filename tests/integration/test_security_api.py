"""Authentication, roles, ownership, sandboxed paths and limits over the real API.

The role matrix is the one of tests/unit/test_access_matrix.py: here every
entry is called without a key, with a wrong key, with the role just below
the one it needs (403) and with the role it needs (neither 401 nor 403).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import AUTH, TEST_ADMIN_KEY
from pravah import schedules
from pravah.api.app import create_app
from pravah.auth import Role
from pravah.models import Schedule, utcnow
from pravah.settings import Settings
from sqlalchemy import text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_access_matrix import MATRIX, PUBLIC

JOB_ID = "00000000-0000-4000-8000-000000000000"


async def _app(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pravah") as client:
            yield app, client


@pytest.fixture
async def client(sqlite_settings: Settings, engine_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url]})
    async for _, c in _app(settings):
        yield c


async def make_key(client: httpx.AsyncClient, role: str, owner: str | None = None) -> str:
    body: dict[str, Any] = {"name": f"{role}-{owner or 'x'}", "role": role}
    if owner:
        body["owner"] = owner
    resp = await client.post("/keys", json=body, headers=AUTH)
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _url(path: str) -> str:
    return (
        path.replace("{job_id}", JOB_ID).replace("{upload_id}", "u1").replace("{key_id}", "nokey")
    )


async def _call(client: httpx.AsyncClient, method: str, path: str, key: str | None) -> int:
    headers = bearer(key) if key else {}
    body: dict[str, Any] | None = (
        {"source": "/", "task": "csv-header"} if method == "POST" else None
    )
    if path == "/keys" and method == "POST":
        body = {"name": "probe"}
    if path.startswith("/uploads") and method == "POST":
        path = "/uploads?filename=a.csv"
    if path == "/jobs/{job_id}/output":
        path += "?path=x"
    resp = await client.request(method, _url(path), headers=headers, json=body)
    return resp.status_code


async def test_every_route_enforces_its_role(sqlite_settings: Settings, engine_url: str) -> None:
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "metrics_public": False}
    )
    async for _, client in _app(settings):
        keys = {role: await make_key(client, role.value) for role in Role}
        for (method, path), needed in MATRIX.items():
            assert await _call(client, method, path, None) == 401, (method, path)
            assert await _call(client, method, path, "pvh_nope_wrong") == 401, (method, path)
            assert await _call(client, method, path, "not-a-key-at-all") == 401, (method, path)
            if needed.rank > 0:
                below = list(Role)[needed.rank - 1]
                assert await _call(client, method, path, keys[below]) == 403, (method, path)
            if path == "/events/jobs":
                continue  # an endless stream (ASGITransport would wait for its end)
            got = await _call(client, method, path, keys[needed])
            assert got not in (401, 403), (method, path, got)
        for method, path in PUBLIC:
            assert await _call(client, method, path, None) not in (401, 403), (method, path)


async def test_401_names_the_scheme_and_says_what_is_missing(client: httpx.AsyncClient) -> None:
    resp = await client.get("/jobs")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in resp.json()["detail"]


async def test_metrics_public_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200


async def test_jobs_of_other_owners_are_404(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("x,y\n1,2\n")
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url]})
    async for _, client in _app(settings):
        alice = await make_key(client, "operator", "alice")
        alice_viewer = await make_key(client, "viewer", "alice")
        bob = await make_key(client, "operator", "bob")
        made = await client.post(
            "/jobs", json={"source": str(src), "task": "csv-header"}, headers=bearer(alice)
        )
        assert made.status_code == 202
        job = made.json()
        assert job["owner"] == "alice"
        for _ in range(200):
            status = (await client.get(f"/jobs/{job['id']}", headers=bearer(alice))).json()
            if status["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        for path in ("", "/results", "/errors", "/output?path=a.csv"):
            resp = await client.get(f"/jobs/{job['id']}{path}", headers=bearer(bob))
            assert resp.status_code == 404, (path, resp.text)
        missing = await client.get(f"/jobs/{JOB_ID}", headers=bearer(bob))
        mine = await client.get(f"/jobs/{job['id']}", headers=bearer(bob))
        # Indistinguishable from a job that does not exist (ids aside).
        assert mine.json()["detail"].replace(job["id"], "X") == missing.json()["detail"].replace(
            JOB_ID, "X"
        )
        cancel = await client.post(f"/jobs/{job['id']}/cancel", headers=bearer(bob))
        assert cancel.status_code == 404
        assert (await client.get("/jobs", headers=bearer(bob))).json()["total"] == 0
        assert (await client.get("/jobs", headers=bearer(alice_viewer))).json()["total"] == 1
        assert (
            await client.get(f"/jobs/{job['id']}/results", headers=bearer(alice_viewer))
        ).status_code == 200
        assert (await client.get("/jobs", headers=AUTH)).json()["total"] == 1  # admin: all


async def test_keys_listed_without_secret_revoked_and_expired(client: httpx.AsyncClient) -> None:
    created = (
        await client.post("/keys", json={"name": "ci", "role": "viewer"}, headers=AUTH)
    ).json()
    key = created["key"]
    assert key.startswith(f"pvh_{created['id']}_")
    assert (await client.get("/keys/me", headers=bearer(key))).json()["role"] == "viewer"
    listing = (await client.get("/keys", headers=AUTH)).text
    assert created["id"] in listing
    assert key not in listing and key.split("_", 2)[2] not in listing
    assert "hash" not in listing and "salt" not in listing
    revoked = await client.delete(f"/keys/{created['id']}", headers=AUTH)
    assert revoked.json()["status"] == "revoked"
    denied = await client.get("/jobs", headers=bearer(key))
    assert denied.status_code == 401 and "revoked" in denied.json()["detail"]
    # Expiry: a key whose time has passed is refused at once.
    soon = (
        await client.post(
            "/keys",
            json={"name": "short", "role": "viewer", "expires_at": "2999-01-01T00:00:00Z"},
            headers=AUTH,
        )
    ).json()
    assert (await client.get("/jobs", headers=bearer(soon["key"]))).status_code == 200
    past = await client.post(
        "/keys", json={"name": "old", "expires_at": "2000-01-01T00:00:00Z"}, headers=AUTH
    )
    assert past.status_code == 422


async def test_expired_key_is_refused(sqlite_settings: Settings, engine_url: str) -> None:
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url], "run_worker": False})
    async for app, client in _app(settings):
        key = await make_key(client, "viewer")
        key_id = key.split("_")[1]
        async with app.state.pravah.db.session() as session:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "UPDATE api_keys SET expires_at = '2001-01-01 00:00:00' WHERE id = :id"
                ).bindparams(id=key_id)
            )
            await session.commit()
        resp = await client.get("/jobs", headers=bearer(key))
        assert resp.status_code == 401 and "expired" in resp.json()["detail"]


async def test_auth_off_needs_no_key(sqlite_settings: Settings, engine_url: str) -> None:
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "auth": "off"}
    )
    async for _, client in _app(settings):
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.get("/keys/me")).json()["auth"] is False


async def test_destination_must_be_allowed_and_outside_the_source(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "report.txt").write_text("a file, not a folder")
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "allowed_roots": [root]}
    )
    async for _, client in _app(settings):

        async def post(dest: str, client: httpx.AsyncClient = client) -> httpx.Response:
            body = {"source": str(root / "src"), "task": "csv-header", "destination": dest}
            return await client.post("/jobs", json=body, headers=AUTH)

        for dest, needle in [
            (str(root / "src"), "inside the source"),
            (str(root / "src" / "sub"), "inside the source"),
            (str(root), "contains the source"),
            (str(tmp_path / "elsewhere"), "outside the allowed roots"),
            (str(root / "out" / ".." / ".." / "x"), "outside the allowed roots"),
            ("s3://secret-bucket/x", "not allowed"),
            (str(root / "report.txt"), f"{str(root / 'report.txt')!r} is a file"),
            (str(root / "report.txt" / "sub"), f"{str(root / 'report.txt')!r} is a file"),
        ]:
            resp = await post(dest)
            assert resp.status_code == 422, (dest, resp.text)
            assert needle in resp.json()["detail"], (dest, resp.json())
            assert resp.json()["field"] == "destination"
        ok = await post(str(root / "out"))
        assert ok.status_code == 202, ok.text
        # A symlink inside the root that leads out is judged by its target.
        (root / "link").symlink_to(tmp_path)
        resp = await client.post(
            "/jobs", json={"source": str(root / "link"), "task": "csv-header"}, headers=AUTH
        )
        assert resp.status_code == 422 and "outside the allowed roots" in resp.json()["detail"]


async def test_large_bodies_get_413(client: httpx.AsyncClient) -> None:
    big = json.dumps({"source": "/", "task": "csv-header", "options": {"x": "a" * 2_000_000}})
    resp = await client.post(
        "/jobs", content=big, headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 413
    assert "larger than" in resp.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    resp = await client.post(
        "/jobs", content=chunks(), headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 413


async def test_secrets_never_in_logs_responses_or_rows(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full job run with keys: no configured or issued secret appears anywhere."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "bad.csv").write_bytes(b"\x00\x01")
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url]})
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async for app, client in _app(settings):
        created = await client.post("/keys", json={"name": "op", "role": "operator"}, headers=AUTH)
        key = created.json()["key"]
        key_secret = key.split("_", 2)[2]
        op = bearer(key)
        job = (
            await client.post("/jobs", json={"source": str(src), "task": "csv-header"}, headers=op)
        ).json()
        for _ in range(200):
            resp = await client.get(f"/jobs/{job['id']}", headers=op)
            seen.append(resp.text)
            if resp.json()["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        for path in (
            "/jobs",
            f"/jobs/{job['id']}/results",
            f"/jobs/{job['id']}/errors",
            "/config",
            "/keys",
            "/keys/me",
            "/metrics",
            "/openapi.json",
        ):
            resp = await client.get(path, headers=AUTH)
            seen.append(resp.text)
            seen.extend(f"{k}: {v}" for k, v in resp.headers.items())
        seen.append((await client.get("/jobs", headers=bearer(key + "x"))).text)
        seen.append((await client.get("/jobs", headers=bearer(TEST_ADMIN_KEY[:-1]))).text)
        async with app.state.pravah.db.session() as session:
            for table in ("jobs", "api_keys"):
                rows = (await session.exec(text(f"SELECT * FROM {table}"))).all()  # type: ignore[call-overload]
                seen.extend(repr(tuple(r)) for r in rows)
    seen.extend(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    blob = "\n".join(seen)
    assert len(seen) > 20
    for secret in (TEST_ADMIN_KEY, key, key_secret):
        assert secret not in blob


async def _wait_done(client: httpx.AsyncClient, job_id: str, key: str) -> dict[str, Any]:
    for _ in range(400):
        job: dict[str, Any] = (await client.get(f"/jobs/{job_id}", headers=bearer(key))).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_every_route_with_an_id_hides_other_owners_things(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    """Walks the matrix: each route naming a job, schedule or upload of alice is 404 to bob."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "bad.csv").write_bytes(b"\x00\x01")  # a failed file, so retry-failed has work
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url]})
    async for _, client in _app(settings):
        alice = await make_key(client, "operator", "alice")
        bob = await make_key(client, "operator", "bob")
        bob_viewer = await make_key(client, "viewer", "bob")
        job = (
            await client.post(
                "/jobs", json={"source": str(src), "task": "csv-header"}, headers=bearer(alice)
            )
        ).json()
        assert (await _wait_done(client, job["id"], alice))["progress"]["files_failed"] == 1
        schedule = await client.post(
            "/schedules",
            json={"cron": "0 3 * * *", "job": {"source": str(src), "task": "csv-header"}},
            headers=bearer(alice),
        )
        assert schedule.status_code == 201, schedule.text
        assert schedule.json()["owner"] == "alice"
        upload = await client.post(
            "/uploads", params={"filename": "u.csv"}, content=b"a,b\n", headers=bearer(alice)
        )
        assert upload.status_code == 201 and upload.json()["owner"] == "alice"
        ids = {
            "{job_id}": job["id"],
            "{schedule_id}": schedule.json()["id"],
            "{upload_id}": upload.json()["id"],
        }
        walked = 0
        for (method, path), needed in MATRIX.items():
            param = next((p for p in ids if p in path), None)
            if param is None:
                continue
            url = path.replace(param, ids[param])
            if path.endswith("/output"):
                url += "?path=a.csv"
            # The viewer sees nothing of alice's either, where its role reaches.
            for key in (bob, bob_viewer) if needed == Role.viewer else (bob,):
                resp = await client.request(method, url, headers=bearer(key))
                assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
            walked += 1
        assert walked == 13  # jobs 7, schedules 4, uploads 2
        # The lists leave alice's things out for bob, and show them to alice and admins.
        assert (await client.get("/jobs", headers=bearer(bob))).json()["total"] == 0
        assert (await client.get("/schedules", headers=bearer(bob))).json() == []
        assert (await client.get("/uploads", headers=bearer(bob))).json()["items"] == []
        for key in (alice, TEST_ADMIN_KEY):
            assert len((await client.get("/schedules", headers=bearer(key))).json()) == 1
            assert len((await client.get("/uploads", headers=bearer(key))).json()["items"]) == 1
        # Bob's failed attempts changed nothing: alice's schedule is still there, active.
        mine = await client.get(f"/schedules/{ids['{schedule_id}']}", headers=bearer(alice))
        assert mine.status_code == 200 and mine.json()["paused"] is False
        # Alice herself may pause, resume and delete it; an admin may too.
        sid = ids["{schedule_id}"]
        paused = await client.post(f"/schedules/{sid}/pause", headers=bearer(alice))
        assert paused.json()["paused"] is True
        resumed = await client.post(f"/schedules/{sid}/resume", headers=AUTH)
        assert resumed.json()["paused"] is False
        assert (await client.delete(f"/schedules/{sid}", headers=bearer(alice))).status_code == 204
        # An admin's retry of alice's failed files is still alice's job:
        # in her list, readable by her, hidden from bob.
        retry = await client.post(f"/jobs/{job['id']}/retry-failed", headers=AUTH)
        assert retry.status_code == 202, retry.text
        assert retry.json()["owner"] == "alice"
        assert (
            await client.get(retry.headers["Location"], headers=bearer(alice))
        ).status_code == 200
        assert (await client.get(retry.headers["Location"], headers=bearer(bob))).status_code == 404


async def test_an_upload_is_a_job_source_only_for_its_owner(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "allowed_roots": [root]}
    )
    async for _, client in _app(settings):
        alice = await make_key(client, "operator", "alice")
        bob = await make_key(client, "operator", "bob")
        upload = (
            await client.post(
                "/uploads", params={"filename": "a.csv"}, content=b"x,y\n", headers=bearer(alice)
            )
        ).json()
        gone = f"{settings.uploads_dir}/00000000-0000-4000-8000-000000000000"
        # Every way of naming alice's upload: its folder, its file:// URI, its
        # file, a path with '..' into it; and a made-up upload id.
        foreign = [
            upload["path"],
            upload["uri"],
            upload["file"],
            f"{settings.uploads_dir}/x/../{upload['id']}",
            gone,
        ]
        for source in foreign:
            body = {"source": source, "task": "csv-header"}
            for method, path, payload in (
                ("POST", "/jobs", body),
                ("POST", "/jobs/dry-run", body),
                ("POST", "/schedules", {"cron": "0 3 * * *", "job": body}),
            ):
                resp = await client.request(method, path, json=payload, headers=bearer(bob))
                assert resp.status_code == 404, (source, path, resp.text)
                assert "no upload with id" in resp.json()["detail"]
        # The uploads folder itself (every owner's uploads) is refused for operators.
        whole = await client.post(
            "/jobs",
            json={"source": str(settings.uploads_dir), "task": "csv-header"},
            headers=bearer(bob),
        )
        assert whole.status_code == 422 and "uploads folder" in whole.json()["detail"]
        # Writing into alice's upload is refused like reading it.
        out = await client.post(
            "/jobs",
            json={"source": str(root), "task": "compress", "destination": upload["path"]},
            headers=bearer(bob),
        )
        assert out.status_code == 404, out.text
        assert (await client.get("/jobs", headers=AUTH)).json()["total"] == 0  # nothing stored
        # Alice (and an admin) may use it.
        job_ids = []
        for key in (alice, TEST_ADMIN_KEY):
            ok = await client.post(
                "/jobs", json={"source": upload["uri"], "task": "csv-header"}, headers=bearer(key)
            )
            assert ok.status_code == 202, ok.text
            assert ok.json()["source"] == upload["path"]
            job_ids.append(ok.json()["id"])
        # While both jobs are pending, alice's delete is refused: it names
        # her job and only counts the admin's, whose id is not hers to see.
        held = await client.delete(f"/uploads/{upload['id']}", headers=bearer(alice))
        assert held.status_code == 409, held.text
        detail = held.json()["detail"]
        assert f"job {job_ids[0]}" in detail and job_ids[1] not in detail, detail
        assert "1 other user's job(s) or schedule(s)" in detail, detail
        as_admin = await client.delete(f"/uploads/{upload['id']}", headers=AUTH)
        assert as_admin.status_code == 409
        assert all(f"job {i}" in as_admin.json()["detail"] for i in job_ids)


async def _make_due(session: AsyncSession) -> None:
    """Every schedule's next tick a minute ago."""
    for row in (await session.exec(select(Schedule))).all():
        row.next_run_at = utcnow() - timedelta(minutes=1)
        session.add(row)
    await session.commit()


async def test_schedule_runs_belong_to_the_schedules_owner(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    settings = sqlite_settings.model_copy(update={"engine_urls": [engine_url], "run_worker": False})
    async for app, client in _app(settings):
        alice = await make_key(client, "operator", "alice")
        bob = await make_key(client, "operator", "bob")
        made = await client.post(
            "/schedules",
            json={"cron": "* * * * *", "job": {"source": str(src), "task": "csv-header"}},
            headers=bearer(alice),
        )
        sid = made.json()["id"]
        async with app.state.pravah.db.session() as session:
            await _make_due(session)
            fired = await schedules.fire_due(session, settings=settings)
        assert len(fired) == 1
        job = await client.get(f"/jobs/{fired[0]}", headers=bearer(alice))
        assert job.status_code == 200 and job.json()["owner"] == "alice"
        assert job.json()["schedule_id"] == sid
        assert (await client.get(f"/jobs/{fired[0]}", headers=bearer(bob))).status_code == 404
        listed = (await client.get(f"/schedules/{sid}", headers=bearer(alice))).json()
        assert listed["last_job_id"] == fired[0]


async def test_a_schedule_is_held_to_the_same_paths_as_a_job(
    sqlite_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    """Regression: schedules skipped the allowed roots, the destination rules and pipelines."""
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    settings = sqlite_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "allowed_roots": [root]}
    )
    async for app, client in _app(settings):

        async def add(job: dict[str, Any], client: httpx.AsyncClient = client) -> httpx.Response:
            return await client.post(
                "/schedules", json={"cron": "0 3 * * *", "job": job}, headers=AUTH
            )

        outside = await add({"source": str(tmp_path), "task": "csv-header"})
        assert outside.status_code == 422 and "outside the allowed roots" in outside.text
        inside = await add(
            {"source": str(root / "src"), "task": "compress", "destination": str(root / "src")}
        )
        assert inside.status_code == 422 and "inside the source" in inside.text
        # A pipeline schedule is validated like a pipeline job (it was a 500).
        pipeline = await add(
            {
                "source": str(root / "src"),
                "pipeline": [{"task": "compress"}, {"task": "hash"}],
                "destination": str(root / "out"),
            }
        )
        assert pipeline.status_code == 201, pipeline.text
        assert pipeline.json()["name"].startswith("compress+hash ")
        # A tick whose source left the allowed roots since (settings narrowed)
        # fires no job; the schedule stays.
        (root / "src").rename(root / "moved")
        (root / "src").symlink_to(tmp_path)
        async with app.state.pravah.db.session() as session:
            await _make_due(session)
            assert await schedules.fire_due(session, settings=settings) == []
        assert len((await client.get("/schedules", headers=AUTH)).json()) == 1


async def test_jobs_list_limit_above_the_maximum_is_a_4xx(client: httpx.AsyncClient) -> None:
    """Regression: GET /jobs?limit= above the maximum was silently cut to the maximum."""
    config = (await client.get("/config", headers=AUTH)).json()["limits"]
    top = config["jobs_max_limit"]
    ok = await client.get("/jobs", params={"limit": top}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["limit"] == top
    for path in ("/jobs", "/events/jobs"):
        resp = await client.get(path, params={"limit": top + 1}, headers=AUTH)
        assert resp.status_code == 422, (path, resp.text)
        assert f"above the maximum of {top}" in resp.json()["detail"]
        assert resp.json()["field"] == "limit"
