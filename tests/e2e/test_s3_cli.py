"""`pravah run s3://bucket/prefix` end to end: CLI subprocess, embedded engine,
a real S3 server (moto) configured only through the standard variables."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_harness import Cli
from s3_helpers import (
    ALLOWED,
    DENIED,
    SECRET_KEY,
    engine_env,
    put_objects,
)

pytestmark = pytest.mark.e2e


def s3_vars(moto_url: str) -> dict[str, str]:
    env = engine_env(moto_url)
    names = [n for n in env if n.startswith(("AWS_", "S3_", "PRAVAH_S3_", "PRAVAH_ALLOWED_"))]
    return {n: env[n] for n in names}


def test_run_csv_header_over_an_s3_prefix(cli: Cli, s3: Any, moto_url: str) -> None:
    put_objects(
        s3, "pravah-in", {"d/a.csv": b"id,name\n", "d/x/b.csv": b"id,name\n", "d/c.csv": b"q\n"}
    )
    result = cli.run(
        "run", "s3://pravah-in/d", "--task", "csv-header", "--json", extra_env=s3_vars(moto_url)
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    assert job["source"] == "s3://pravah-in/d"
    schemas = {tuple(s["columns"]): s["files"] for s in job["summary"]["schemas"]}
    assert schemas == {("id", "name"): 2, ("q",): 1}
    assert SECRET_KEY not in result.stdout + result.stderr


def test_run_refuses_a_bucket_that_is_not_allowed(cli: Cli, s3: Any, moto_url: str) -> None:
    result = cli.run("run", f"s3://{DENIED}/d", "--task", "csv-header", extra_env=s3_vars(moto_url))
    assert result.returncode == 2, result.stderr
    assert "not allowed" in result.stderr
    assert ",".join(ALLOWED) in result.stderr.replace(", ", ",")


def test_run_compress_from_s3_to_s3_with_sse_from_the_environment(
    cli: Cli, s3: Any, moto_url: str
) -> None:
    import gzip

    put_objects(s3, "pravah-in", {"logs/a.log": b"a\n" * 1000, "logs/b/c.log": b"c\n" * 10})
    env = {**s3_vars(moto_url), "PRAVAH_S3_SSE": "sse-s3"}
    result = cli.run(
        "run",
        "s3://pravah-in/logs",
        "--task",
        "compress",
        "-o",
        "format=gzip",
        "--dest",
        "s3://pravah-out/gz",
        "--json",
        extra_env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    for key, body in (("gz/a.log.gz", b"a\n" * 1000), ("gz/b/c.log.gz", b"c\n" * 10)):
        obj = s3.get_object(Bucket="pravah-out", Key=key)
        assert obj["ServerSideEncryption"] == "AES256"
        assert gzip.decompress(obj["Body"].read()) == body
