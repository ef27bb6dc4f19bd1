"""Jobs on S3 through the REST API: a real engine, a real S3 server (moto),
SQLite job store.

Checks what a user of the API sees: jobs over s3:// sources and
destinations complete with the right results and objects, storage failures
end the job with a clear error, refused buckets are a 4xx, and the storage
secret never appears in job rows, API answers or logs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import api_client
from pravah.engine_launcher import LocalEngineSync
from pravah.settings import Settings
from s3_helpers import (
    ACCESS_KEY,
    ALLOWED,
    DENIED,
    SECRET_KEY,
    engine_env,
    free_port,
    keys,
    put_objects,
)

POLL_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def s3_engine(engine_bin: Path, s3_env: dict[str, str]) -> Iterator[str]:
    with LocalEngineSync(engine_bin, start_timeout=30, env=s3_env) as url:
        yield url


def s3_settings(base: Settings, engine: str, **update: Any) -> Settings:
    values: dict[str, Any] = {
        "engine_urls": [engine],
        "allowed_buckets": list(ALLOWED),
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        **update,
    }
    return base.model_copy(update=values)


@pytest.fixture
async def api(sqlite_settings: Settings, s3_engine: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(s3_settings(sqlite_settings, s3_engine)) as client:
        yield client


async def run_job(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/jobs", json=request)
    assert resp.status_code in (200, 201, 202), resp.text
    job_id = resp.json()["id"]
    deadline = asyncio.get_running_loop().time() + POLL_TIMEOUT
    job: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in {"completed", "failed", "cancelled"}:
            return job
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish in {POLL_TIMEOUT} s; last: {job}")


async def results_of(client: httpx.AsyncClient, job_id: str) -> dict[str, dict[str, Any]]:
    resp = await client.get(f"/jobs/{job_id}/results", params={"format": "jsonl"})
    assert resp.status_code == 200, resp.text
    lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    return {line["path"]: line for line in lines}


async def test_csv_header_job_over_an_s3_prefix(api: httpx.AsyncClient, s3: Any) -> None:
    put_objects(
        s3,
        "pravah-in",
        {"in/a.csv": b"id,name\n1,x\n", "in/b c/ü.csv": b"k;v\n", "in/bad.csv": b"\x00bin"},
    )
    job = await run_job(api, {"source": "s3://pravah-in/in/", "task": "csv-header"})
    assert job["status"] == "completed", job
    assert job["source"] == "s3://pravah-in/in"
    assert job["progress"]["files_total"] == 3
    assert job["progress"]["files_failed"] == 1
    results = await results_of(api, job["id"])
    assert results["a.csv"]["columns"] == ["id", "name"]
    assert results["b c/ü.csv"]["columns"] == ["k", "v"]
    assert results["bad.csv"]["error_kind"] == "invalid_data"


async def test_s3_to_s3_compress_and_s3_to_local(
    api: httpx.AsyncClient, s3: Any, sqlite_settings: Settings
) -> None:
    body = b"log line\n" * 5000
    put_objects(s3, "pravah-in", {f"logs/{i}.log": body for i in range(5)})
    job = await run_job(
        api,
        {
            "source": "s3://pravah-in/logs",
            "task": "compress",
            "options": {"format": "zstd"},
            "destination": "s3://pravah-out/zipped",
        },
    )
    assert job["status"] == "completed", job
    assert keys(s3, "pravah-out") == [f"zipped/{i}.log.zst" for i in range(5)]
    local = sqlite_settings.state_dir.parent / "local-out"
    job = await run_job(
        api,
        {
            "source": "s3://pravah-in/logs",
            "task": "compress",
            "options": {"format": "gzip"},
            "destination": str(local),
        },
    )
    assert job["status"] == "completed", job
    assert gzip.decompress((local / "3.log.gz").read_bytes()) == body


async def test_refused_buckets_and_overlapping_prefixes_are_4xx(api: httpx.AsyncClient) -> None:
    for request in (
        {"source": f"s3://{DENIED}/x", "task": "csv-header"},
        {"source": "s3://pravah-in/x", "task": "compress", "destination": f"s3://{DENIED}/y"},
        {"source": "s3://pravah-in/x", "task": "compress", "destination": "s3://pravah-in/x/out"},
        {"source": "s3://pravah-in/a/../b", "task": "csv-header"},
    ):
        resp = await api.post("/jobs", json=request)
        assert 400 <= resp.status_code < 500, (request, resp.text)
    assert (await api.get("/jobs")).json()["total"] == 0


async def test_missing_bucket_fails_the_job_with_a_clear_error(
    sqlite_settings: Settings, engine_bin: Path, moto_url: str, s3: Any
) -> None:
    env = engine_env(moto_url, PRAVAH_ALLOWED_BUCKETS="pravah-gone")
    with LocalEngineSync(engine_bin, start_timeout=30, env=env) as engine:
        settings = s3_settings(sqlite_settings, engine, allowed_buckets=["pravah-gone"])
        async with api_client(settings) as api:
            job = await run_job(api, {"source": "s3://pravah-gone/x", "task": "csv-header"})
    assert job["status"] == "failed"
    assert "bucket does not exist" in job["error"]


async def test_unreachable_endpoint_fails_the_job_without_hanging(
    sqlite_settings: Settings, engine_bin: Path
) -> None:
    env = engine_env(f"http://127.0.0.1:{free_port()}")
    with LocalEngineSync(engine_bin, start_timeout=30, env=env) as engine:
        async with api_client(s3_settings(sqlite_settings, engine)) as api:
            job = await run_job(
                api, {"source": "s3://pravah-in/x", "task": "csv-header", "max_attempts": 1}
            )
    assert job["status"] == "failed"
    assert "S3 endpoint cannot be reached" in job["error"]


async def test_sse_kms_from_the_settings_is_on_written_objects(
    sqlite_settings: Settings, s3_engine: str, s3: Any, moto_url: str
) -> None:
    from s3_helpers import client

    key_id = client(moto_url, "kms").create_key()["KeyMetadata"]["KeyId"]
    put_objects(s3, "pravah-in", {"t/a.txt": b"a" * 1000})
    settings = s3_settings(sqlite_settings, s3_engine, s3_sse="sse-kms", s3_sse_kms_key_id=key_id)
    async with api_client(settings) as api:
        job = await run_job(
            api,
            {
                "source": "s3://pravah-in/t",
                "task": "compress",
                "options": {"format": "gzip"},
                "destination": "s3://pravah-out/enc",
            },
        )
    assert job["status"] == "completed", job
    head = s3.head_object(Bucket="pravah-out", Key="enc/a.txt.gz")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


async def test_the_storage_secret_is_never_stored_returned_or_logged(
    api: httpx.AsyncClient,
    s3: Any,
    sqlite_settings: Settings,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put_objects(s3, "pravah-in", {"s/a.csv": b"a,b\n"})
    ok = await run_job(api, {"source": "s3://pravah-in/s", "task": "csv-header"})
    bad = await run_job(api, {"source": "s3://pravah-out/none", "task": "hash"})
    assert ok["status"] == "completed" and bad["status"] == "completed"
    answers = [
        (await api.get(f"/jobs/{ok['id']}")).text,
        (await api.get("/jobs")).text,
        (await api.get(f"/jobs/{ok['id']}/results")).text,
        (await api.get("/config")).text,
    ]
    db = sqlite3.connect(sqlite_settings.state_dir / "pravah.db")
    try:
        rows = [repr(r) for r in db.execute("SELECT * FROM jobs")]
    finally:
        db.close()
    out, err = capfd.readouterr()
    logs = caplog.text
    for where, text in [
        ("API", "\n".join(answers)),
        ("job rows", "\n".join(rows)),
        ("stdout/stderr", out + err),
        ("logs", logs),
    ]:
        assert SECRET_KEY not in text, f"the secret key appears in the {where}"
    assert rows, "the job rows were read"


def _zip_of_images(sizes: dict[str, tuple[int, int]]) -> bytes:
    import io
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, size in sizes.items():
            img = io.BytesIO()
            Image.new("RGB", size, (200, 40, 90)).save(img, "JPEG")
            archive.writestr(name, img.getvalue())
    return buf.getvalue()


async def test_upload_a_zip_then_extract_and_thumbnail_into_s3_with_sse(
    sqlite_settings: Settings, s3_engine: str, s3: Any
) -> None:
    """The web developer's story: upload over REST, a pipeline job to s3://, boto3 checks."""
    import io

    from PIL import Image

    sizes = {"photos/a.jpg": (2400, 1600), "photos/b.jpg": (1200, 1800), "c.jpg": (3000, 3000)}
    settings = s3_settings(sqlite_settings, s3_engine, s3_sse="sse-s3")
    async with api_client(settings) as api:
        resp = await api.post(
            "/uploads", params={"filename": "photos.zip"}, content=_zip_of_images(sizes)
        )
        assert resp.status_code == 201, resp.text
        job = await run_job(
            api,
            {
                "source": resp.json()["uri"],
                "pipeline": [
                    {"task": "extract"},
                    {
                        "task": "thumbnail",
                        "options": {"width": 1024, "height": 1024, "mode": "fill"},
                    },
                ],
                "destination": "s3://pravah-out/thumbs/",
            },
        )
    assert job["status"] == "completed", job
    thumbs = keys(s3, "pravah-out", "thumbs/")
    assert len(thumbs) == len(sizes), thumbs
    for key in thumbs:
        obj = s3.get_object(Bucket="pravah-out", Key=key)
        assert obj["ServerSideEncryption"] == "AES256"
        with Image.open(io.BytesIO(obj["Body"].read())) as img:
            assert img.size == (1024, 1024)


async def test_a_jobs_own_encryption_overrides_the_default(
    sqlite_settings: Settings, s3_engine: str, s3: Any, moto_url: str
) -> None:
    from s3_helpers import client

    key_id = client(moto_url, "kms").create_key()["KeyMetadata"]["KeyId"]
    put_objects(s3, "pravah-in", {"j/a.txt": b"a" * 100})
    request: dict[str, Any] = {
        "source": "s3://pravah-in/j",
        "task": "compress",
        "options": {"format": "gzip"},
    }
    async with api_client(s3_settings(sqlite_settings, s3_engine, s3_sse="sse-s3")) as api:
        local = str(sqlite_settings.state_dir.parent / "local-out")
        resp = await api.post(
            "/jobs",
            json={**request, "destination": local, "encryption": {"mode": "sse-kms"}},
        )
        assert resp.status_code == 422, resp.text
        assert "encryption" in resp.text
        job = await run_job(
            api,
            {
                **request,
                "destination": "s3://pravah-out/own",
                "encryption": {"mode": "sse-kms", "kms_key_id": key_id},
            },
        )
        assert job["status"] == "completed", job
        assert job["encryption"] == {"mode": "sse-kms", "kms_key_id": key_id}
        default = await run_job(api, {**request, "destination": "s3://pravah-out/default"})
        assert default["status"] == "completed", default
    own = s3.head_object(Bucket="pravah-out", Key="own/a.txt.gz")
    assert own["ServerSideEncryption"] == "aws:kms" and key_id in own["SSEKMSKeyId"]
    dflt = s3.head_object(Bucket="pravah-out", Key="default/a.txt.gz")
    assert dflt["ServerSideEncryption"] == "AES256"
