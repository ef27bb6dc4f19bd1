"""`pravah run s3://bucket/prefix` end to end: CLI subprocess, embedded engine,
a real S3 server (moto) configured only through the standard variables."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_harness import Cli, Server
from s3_helpers import (
    ALLOWED,
    DENIED,
    SECRET_KEY,
    client,
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


def test_run_with_sse_kms_flags_writes_objects_under_that_key(
    cli: Cli, s3: Any, moto_url: str
) -> None:
    key_id = client(moto_url, "kms").create_key()["KeyMetadata"]["KeyId"]
    put_objects(s3, "pravah-in", {"k/a.log": b"a\n" * 100})
    result = cli.run(
        "run",
        "s3://pravah-in/k",
        "--task",
        "compress",
        "--dest",
        "s3://pravah-out/k",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        key_id,
        "--json",
        extra_env=s3_vars(moto_url),
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["encryption"] == {"mode": "sse-kms", "kms_key_id": key_id}
    head = s3.head_object(Bucket="pravah-out", Key="k/a.log.gz")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


def test_submit_with_sse_aes256_writes_encrypted_objects(
    cli: Cli, s3: Any, s3_server: Server
) -> None:
    put_objects(s3, "pravah-in", {"s/a.log": b"a\n" * 100})
    result = cli.run(
        "submit",
        "s3://pravah-in/s",
        "--task",
        "compress",
        "--dest",
        "s3://pravah-out/s",
        "--sse",
        "AES256",
        "--wait",
        "--json",
        "--server",
        s3_server.url,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    head = s3.head_object(Bucket="pravah-out", Key="s/a.log.gz")
    assert head["ServerSideEncryption"] == "AES256"


def test_sse_without_an_s3_destination_is_a_usage_error(cli: Cli, tmp_path: Any) -> None:
    result = cli.run("run", str(tmp_path), "--task", "compress", "--sse", "aes256")
    assert result.returncode == 2
    assert "--sse applies to objects written to an s3:// --dest" in result.stderr
