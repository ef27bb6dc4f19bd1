"""A real S3-compatible server for the tests: moto in server mode.

Why moto's server and not a mock: the engine's S3 client (object_store over
HTTP) must be tested against real HTTP, real XML listings with pagination,
ranged GETs, multipart uploads and SSE headers. moto's server
(`moto_server`, from the `moto[server]` dev dependency) speaks all of that
on localhost; it runs as a separate process on a free port, once per
session, and is reset before each test (`POST /moto-api/reset`).

Fixtures (import them into a test module to use them):
- `moto_url`: the running server's endpoint;
- `s3`: a boto3 client on it, with the buckets `ALLOWED` and `DENIED`
  freshly created for each test;
- `s3_env`: the environment an engine needs to reach it, with `ALLOWED`
  (not `DENIED`) as its allowed buckets and a recognisable secret key that
  tests look for in places it must never appear.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ALLOWED = ("pravah-in", "pravah-out")
DENIED = "pravah-private"
ACCESS_KEY = "AKIAPRAVAHTEST"
# Distinctive, so a test can grep for it in job rows, API answers and logs.
SECRET_KEY = "pravah-s3-secret-5f1c9a7e0b"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_bin() -> str:
    candidate = Path(sys.executable).parent / "moto_server"
    if not candidate.exists():
        pytest.fail(
            f"{candidate} is missing: install the dev dependencies (make install)", pytrace=False
        )
    return str(candidate)


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `moto_server` on a free port; return the process and its URL once it answers."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(
        [_moto_bin(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited with {proc.returncode}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("moto_server did not answer within 30 s", pytrace=False)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto S3 server on a free local port for the whole session."""
    proc, url = start_moto()
    yield url
    stop(proc)


def client(url: str, service: str = "s3") -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


@pytest.fixture
def s3(moto_url: str) -> Any:
    """A boto3 S3 client; the server is reset and the test buckets created."""
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass
    s3_client = client(moto_url)
    for bucket in (*ALLOWED, DENIED):
        s3_client.create_bucket(Bucket=bucket)
    return s3_client


def engine_env(endpoint: str, **overrides: str) -> dict[str, str]:
    """An engine's environment for the S3 server at `endpoint`."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "S3_ENDPOINT_URL": endpoint,
        "PRAVAH_ALLOWED_BUCKETS": ",".join(ALLOWED),
        # Fail fast in tests: an unreachable endpoint is an error in seconds.
        "PRAVAH_S3_MAX_RETRIES": "2",
        "PRAVAH_S3_RETRY_TIMEOUT_SECS": "5",
        "PRAVAH_S3_CONNECT_TIMEOUT_SECS": "2",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def s3_env(moto_url: str) -> dict[str, str]:
    return engine_env(moto_url)


def put_objects(s3_client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    """Puts every object, eight requests at a time (boto3 clients are
    thread-safe): one at a time, moto took 23 ms each."""
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(
            lambda item: s3_client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
            objects.items(),
        ):
            pass


def keys(s3_client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix` (all pages)."""
    found: list[str] = []
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        found.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(found)
