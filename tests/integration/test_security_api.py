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
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import AUTH, TEST_ADMIN_KEY
from pravah.api.app import create_app
from pravah.auth import Role
from pravah.settings import Settings
from sqlalchemy import text

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
