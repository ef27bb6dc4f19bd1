"""The engine on an S3-compatible store, called directly over gRPC.

A real engine process reads and writes a real S3 server (moto on localhost,
see tests/s3_helpers.py); boto3 puts the inputs and reads back what the
engine wrote, with its encryption headers.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pravah.engine.v1 import engine_pb2 as pb
from pravah.engine.v1 import engine_pb2_grpc as pb_grpc
from pravah.engine_launcher import LocalEngineSync
from s3_helpers import (
    DENIED,
    client,
    engine_env,
    free_port,
    keys,
    put_objects,
    start_moto,
    stop,
)


@pytest.fixture(scope="module")
def metrics_addr() -> str:
    """Where the module's engine serves its Prometheus metrics."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def s3_engine(engine_bin: Path, s3_env: dict[str, str], metrics_addr: str) -> Iterator[str]:
    env = {**s3_env, "PRAVAH_ENGINE_METRICS_LISTEN": metrics_addr}
    with LocalEngineSync(engine_bin, start_timeout=30, env=env) as url:
        yield url


def s3_gets(metrics_addr: str) -> tuple[float, float]:
    """The engine's GET requests to the store and the bytes they returned, so far."""
    import urllib.request

    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("pravah_engine_s3_get")
    )
    return (
        float(values["pravah_engine_s3_get_requests_total"]),
        float(values["pravah_engine_s3_get_bytes_total"]),
    )


@pytest.fixture
def stub(s3_engine: str) -> Iterator[pb_grpc.EngineServiceStub]:
    channel = grpc.insecure_channel(s3_engine)
    yield pb_grpc.EngineServiceStub(channel)
    channel.close()


def list_all(
    stub: pb_grpc.EngineServiceStub, source: str, **filters: Any
) -> tuple[list[pb.FileEntry], list[pb.FileError], pb.ListSummary]:
    entries: list[pb.FileEntry] = []
    errors: list[pb.FileError] = []
    summary = None
    req = pb.ListRequest(source=source, filters=pb.Filters(**filters))
    for msg in stub.List(req, timeout=60):
        kind = msg.WhichOneof("message")
        if kind == "batch":
            entries.extend(msg.batch.entries)
        elif kind == "error":
            errors.append(msg.error)
        elif kind == "summary":
            summary = msg.summary
    assert summary is not None
    return entries, errors, summary


def process(
    stub: pb_grpc.EngineServiceStub,
    task: str,
    source: str,
    *,
    destination: str = "",
    options: dict[str, Any] | None = None,
    encryption: pb.Encryption | None = None,
    results_dir: str = "",
) -> tuple[dict[str, dict[str, Any]], list[pb.WorkItemDone]]:
    """Run `task` over a whole source; results by path, and the item completions."""
    start = pb.ProcessStart(
        task=task,
        options_json=json.dumps(options or {}),
        destination=destination,
        encryption=encryption,
        results_dir=results_dir,
    )
    reqs = [
        pb.ProcessRequest(start=start),
        pb.ProcessRequest(work=pb.WorkItem(id="w1", source=pb.SourceSpec(source=source))),
    ]
    results: dict[str, dict[str, Any]] = {}
    done: list[pb.WorkItemDone] = []
    for msg in stub.Process(iter(reqs), timeout=120):
        kind = msg.WhichOneof("event")
        if kind == "batch":
            for r in msg.batch.results:
                if r.WhichOneof("outcome") == "error":
                    results[r.path] = {"error": r.error.message, "kind": r.error.kind}
                else:
                    results[r.path] = json.loads(r.result_json)
        elif kind == "item_done":
            done.append(msg.item_done)
    return results, done


CSVS = {
    "data/a.csv": b"id,name\n1,x\n",
    "data/sub/b.csv": b"x;y;z\n1;2;3\n",
    "data/with space/ünïcøde.csv": b"\xef\xbb\xbfk\tv\n",
    "data/notes.txt": b"not a csv\n",
    "data/.hidden.csv": b"h\n",
    "other/c.csv": b"not,under,prefix\n",
}


def test_listing_a_prefix_applies_the_walk_filters(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    put_objects(s3, "pravah-in", {k: v for k, v in CSVS.items()})
    entries, errors, summary = list_all(stub, "s3://pravah-in/data", extensions=["csv"])
    paths = sorted(e.path for e in entries)
    assert paths == ["a.csv", "sub/b.csv", "with space/ünïcøde.csv"]
    assert not errors
    assert summary.files == 3
    assert summary.root == "s3://pravah-in/data"
    assert {e.path: e.size for e in entries}["a.csv"] == len(CSVS["data/a.csv"])
    assert all(e.modified.seconds > 0 for e in entries)
    # Globs on the key relative to the prefix, size bounds, hidden files.
    entries, _, _ = list_all(stub, "s3://pravah-in/data/", include=["sub/**"])
    assert [e.path for e in entries] == ["sub/b.csv"]
    entries, _, _ = list_all(stub, "s3://pravah-in/data", min_size=10, extensions=["csv"])
    assert sorted(e.path for e in entries) == ["a.csv", "sub/b.csv"]
    entries, _, _ = list_all(stub, "s3://pravah-in/data", include_hidden=True, max_depth=1)
    assert sorted(e.path for e in entries) == [".hidden.csv", "a.csv", "notes.txt"]


def test_csv_header_reads_objects_in_place(stub: pb_grpc.EngineServiceStub, s3: Any) -> None:
    put_objects(s3, "pravah-in", CSVS)
    results, done = process(stub, "csv-header", "s3://pravah-in/data")
    assert results["a.csv"] == {"columns": ["id", "name"]}
    assert results["sub/b.csv"] == {"columns": ["x", "y", "z"]}
    assert results["with space/ünïcøde.csv"] == {"columns": ["k", "v"]}
    assert [d.files for d in done] == [4]
    assert not done[0].HasField("error")


def test_a_prefix_of_thousands_of_keys_is_listed_whole(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    # S3 lists at most 1,000 keys a page: two full pages and a part one.
    put_objects(s3, "pravah-in", {f"many/{i:05d}.csv": b"a,b\n" for i in range(2345)})
    entries, errors, summary = list_all(stub, "s3://pravah-in/many")
    assert summary.files == 2345 and not errors
    assert len({e.path for e in entries}) == 2345


def test_dot_dot_keys_are_reported_and_never_escape_the_prefix(
    stub: pb_grpc.EngineServiceStub, s3: Any, tmp_path: Path
) -> None:
    put_objects(
        s3,
        "pravah-in",
        {
            "in/ok.csv": b"a\n",
            "in/../secret.csv": b"s\n",
            "in/x/../../secret2.csv": b"s\n",
            "in/z.csv": b"z\n",
            "secret.csv": b"top,secret\n",
        },
    )
    entries, errors, _ = list_all(stub, "s3://pravah-in/in")
    assert sorted(e.path for e in entries) == ["ok.csv", "z.csv"]
    assert sorted(e.path for e in errors) == ["../secret.csv", "x/../../secret2.csv"]
    assert all(e.kind == pb.ERROR_KIND_OUTSIDE_ROOT for e in errors)
    # Naming such a path directly is refused too: no object outside the prefix is read.
    start = pb.ProcessStart(task="csv-header")
    item = pb.WorkItem(
        id="w",
        files=pb.FileList(root="s3://pravah-in/in", files=[pb.FileEntry(path="../secret.csv")]),
    )
    reqs = [pb.ProcessRequest(start=start), pb.ProcessRequest(work=item)]
    outcomes = [
        r
        for m in stub.Process(iter(reqs), timeout=60)
        if m.WhichOneof("event") == "batch"
        for r in m.batch.results
    ]
    assert len(outcomes) == 1
    assert outcomes[0].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT
    assert "top" not in outcomes[0].result_json


def test_a_bucket_outside_the_allowed_list_is_refused(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    put_objects(s3, DENIED, {"a.csv": b"a\n"})
    with pytest.raises(grpc.RpcError) as err:
        list_all(stub, f"s3://{DENIED}/")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "PRAVAH_ALLOWED_BUCKETS" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        process(stub, "compress", "s3://pravah-in/", destination=f"s3://{DENIED}/out")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_missing_bucket_is_not_found(engine_bin: Path, moto_url: str, s3: Any) -> None:
    env = engine_env(moto_url, PRAVAH_ALLOWED_BUCKETS="pravah-nowhere")
    with (
        LocalEngineSync(engine_bin, start_timeout=30, env=env) as url,
        grpc.insecure_channel(url) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        list_all(pb_grpc.EngineServiceStub(channel), "s3://pravah-nowhere/x")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "bucket does not exist" in (err.value.details() or "")


def test_a_missing_destination_bucket_fails_the_call_not_each_file(
    engine_bin: Path, moto_url: str, s3: Any, tmp_path: Path
) -> None:
    """Each upload failed with NoSuchBucket, and the job 'completed' with
    every file failed; a local destination that cannot be made fails at once."""
    (tmp_path / "a.log").write_text("log\n")
    env = engine_env(moto_url, PRAVAH_ALLOWED_BUCKETS="pravah-in,pravah-nowhere")
    with (
        LocalEngineSync(engine_bin, start_timeout=30, env=env) as url,
        grpc.insecure_channel(url) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        process(
            pb_grpc.EngineServiceStub(channel),
            "compress",
            str(tmp_path),
            destination="s3://pravah-nowhere/out",
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "bucket does not exist" in (err.value.details() or ""), err.value.details()


def test_an_unreachable_endpoint_fails_fast_with_a_clear_error(engine_bin: Path) -> None:
    env = engine_env(f"http://127.0.0.1:{free_port()}")
    with (
        LocalEngineSync(engine_bin, start_timeout=30, env=env) as url,
        grpc.insecure_channel(url) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        list_all(pb_grpc.EngineServiceStub(channel), "s3://pravah-in/x")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "S3_ENDPOINT_URL" in (err.value.details() or "")


def test_wrong_credentials_are_permission_denied(engine_bin: Path) -> None:
    # A second server that checks keys (moto's IAM auth on from the first call).
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        env = engine_env(url)
        local = LocalEngineSync(engine_bin, start_timeout=30, env=env)
        with (
            local as engine,
            grpc.insecure_channel(engine) as channel,
            pytest.raises(grpc.RpcError) as err,
        ):
            list_all(pb_grpc.EngineServiceStub(channel), "s3://pravah-in/x")
        logs = local.stderr_tail  # complete once the engine stopped
    finally:
        stop(proc)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = err.value.details() or ""
    assert "AWS_SECRET_ACCESS_KEY" in details
    assert "list failed" in logs  # the failure is logged, the secret is not
    assert env["AWS_SECRET_ACCESS_KEY"] not in details + logs


def test_compress_from_s3_to_s3_with_sse_s3(stub: pb_grpc.EngineServiceStub, s3: Any) -> None:
    logs = {f"logs/day{i}/app log.txt": (f"line {i}\n" * 2000).encode() for i in range(3)}
    put_objects(s3, "pravah-in", logs)
    results, done = process(
        stub,
        "compress",
        "s3://pravah-in/logs",
        destination="s3://pravah-out/archive/",
        options={"format": "gzip"},
        encryption=pb.Encryption(mode="sse-s3"),
    )
    assert not done[0].HasField("error") and done[0].failed == 0, results
    written = keys(s3, "pravah-out")
    assert written == [f"archive/day{i}/app log.txt.gz" for i in range(3)]
    for i in range(3):
        obj = s3.get_object(Bucket="pravah-out", Key=f"archive/day{i}/app log.txt.gz")
        assert gzip.decompress(obj["Body"].read()) == logs[f"logs/day{i}/app log.txt"]
        assert obj["ServerSideEncryption"] == "AES256"
    # The source is untouched.
    assert keys(s3, "pravah-in") == sorted(logs)


def test_local_to_s3_with_sse_kms_and_a_multipart_output(
    stub: pb_grpc.EngineServiceStub, s3: Any, moto_url: str, tmp_path: Path
) -> None:
    kms = client(moto_url, "kms")
    key_id = kms.create_key(Description="pravah test")["KeyMetadata"]["KeyId"]
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(20 << 20)  # incompressible: the .gz output is > the 16 MiB threshold
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_text("small\n")
    results, done = process(
        stub,
        "compress",
        str(src),
        destination="s3://pravah-out/kms",
        options={"format": "gzip", "level": 1},
        encryption=pb.Encryption(mode="sse-kms", kms_key_id=key_id),
    )
    assert done[0].failed == 0, results
    assert keys(s3, "pravah-out") == ["kms/big.bin.gz", "kms/small.txt.gz"]
    for key in ("kms/big.bin.gz", "kms/small.txt.gz"):
        head = s3.head_object(Bucket="pravah-out", Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]
    big_obj = s3.get_object(Bucket="pravah-out", Key="kms/big.bin.gz")
    assert gzip.decompress(big_obj["Body"].read()) == big
    # Nothing is left in the local staging folders.
    assert not list((tmp_path).glob("**/staging/*/*"))


def test_hash_and_s3_to_local(stub: pb_grpc.EngineServiceStub, s3: Any, tmp_path: Path) -> None:
    put_objects(s3, "pravah-in", {"h/a.bin": b"same", "h/b.bin": b"same", "h/c.bin": b"other"})
    _, done = process(stub, "hash", "s3://pravah-in/h", results_dir=str(tmp_path / "res"))
    assert done[0].files == 3 and done[0].failed == 0
    # Each object is a copy of its own: the inode of its staged local copy,
    # which the next copy may be given too, says nothing about it.
    start = pb.ProcessStart(task="hash", options_json="{}")
    work = pb.WorkItem(id="w1", source=pb.SourceSpec(source="s3://pravah-in/h"))
    reqs = [pb.ProcessRequest(start=start), pb.ProcessRequest(work=work)]
    events = list(stub.Process(iter(reqs), timeout=120))
    results = [
        json.loads(r.result_json)
        for m in events
        if m.WhichOneof("event") == "batch"
        for r in m.batch.results
    ]
    assert len(results) == 3 and not any("inode" in r for r in results), results
    (summary,) = [
        json.loads(m.summary.summary_json) for m in events if m.WhichOneof("event") == "summary"
    ]
    assert (summary["duplicate_groups"], summary["wasted_bytes"]) == (1, 4), summary
    dest = tmp_path / "out"
    put_objects(s3, "pravah-in", {"t/x.txt": b"hello " * 100})
    _, done = process(
        stub,
        "compress",
        "s3://pravah-in/t",
        destination=str(dest),
        options={"format": "gzip"},
    )
    assert done[0].failed == 0
    assert gzip.decompress((dest / "x.txt.gz").read_bytes()) == b"hello " * 100
    # Staged copies of the objects are gone.
    leftovers = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_writing_task_on_an_s3_source_needs_a_destination(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    put_objects(s3, "pravah-in", {"n/a.txt": b"a"})
    _, done = process(stub, "compress", "s3://pravah-in/n")
    assert done[0].HasField("error")
    assert "destination" in done[0].error.message


def test_a_source_item_on_an_unreachable_endpoint_fails_the_item(engine_bin: Path) -> None:
    env = engine_env(f"http://127.0.0.1:{free_port()}")
    with (
        LocalEngineSync(engine_bin, start_timeout=30, env=env) as url,
        grpc.insecure_channel(url) as channel,
    ):
        _, done = process(pb_grpc.EngineServiceStub(channel), "csv-header", "s3://pravah-in/x")
    assert done[0].HasField("error")
    assert "cannot be reached" in done[0].error.message


def test_an_interrupted_multipart_upload_leaves_no_object(engine_bin: Path, tmp_path: Path) -> None:
    # moto with IAM auth after its first 8 requests: our 4 set-up calls
    # below, the engine's listing of one key (the destination's bucket is
    # checked when the call starts), its two HEADs of the output key
    # (existing=skip: the task's before its work, and the one before a
    # multipart upload) and its CreateMultipartUpload pass; every part
    # upload after that is refused, as if the credentials were revoked
    # mid-upload.
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "8"})
    try:
        iam = client(url, "iam")
        iam.create_user(UserName="checker")
        key = iam.create_access_key(UserName="checker")["AccessKey"]
        allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="checker",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow_all]}),
        )
        import boto3

        checker = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        checker.create_bucket(Bucket="pravah-out")
        src = tmp_path / "src"
        src.mkdir()
        (src / "big.bin").write_bytes(os.urandom(20 << 20))
        with (
            LocalEngineSync(engine_bin, start_timeout=30, env=engine_env(url)) as engine,
            grpc.insecure_channel(engine) as channel,
        ):
            results, done = process(
                pb_grpc.EngineServiceStub(channel),
                "compress",
                str(src),
                destination="s3://pravah-out/x",
                options={"format": "gzip", "level": 1},
            )
        assert done[0].failed == 1
        assert results["big.bin"]["kind"] == pb.ERROR_KIND_PERMISSION_DENIED
        # The upload was started, then cut short: nothing under the final key.
        uploads = checker.list_multipart_uploads(Bucket="pravah-out").get("Uploads", [])
        assert [u["Key"] for u in uploads] == ["x/big.bin.gz"]
        assert checker.list_objects_v2(Bucket="pravah-out")["KeyCount"] == 0
    finally:
        stop(proc)


def _zip(files: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _jpeg(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


# Every task that writes files, from an S3 source to an S3 destination:
# (task, options, input objects, expected output keys under the destination).
WRITING_TASKS = [
    ("compress", {"format": "zstd"}, {"a.log": b"x" * 5000}, ["a.log.zst"]),
    ("decompress", {}, {"a.log.gz": gzip.compress(b"y" * 5000)}, ["a.log"]),
    (
        "extract",
        {},
        {"pack.zip": _zip({"docs/r.txt": b"r", "s.txt": b"s"})},
        ["pack/docs/r.txt", "pack/s.txt"],
    ),
    ("thumbnail", {"width": 64, "height": 64}, {"p/img.jpg": _jpeg((640, 480))}, ["p/img.jpg"]),
    ("convert", {"to": "jsonl"}, {"t.csv": b"a,b\n1,2\n3,4\n"}, ["t.jsonl"]),
]


@pytest.mark.parametrize(("task", "options", "inputs", "outputs"), WRITING_TASKS)
def test_every_writing_task_runs_from_s3_to_s3(
    stub: pb_grpc.EngineServiceStub,
    s3: Any,
    task: str,
    options: dict[str, Any],
    inputs: dict[str, bytes],
    outputs: list[str],
) -> None:
    put_objects(s3, "pravah-in", {f"src/{k}": v for k, v in inputs.items()})
    results, done = process(
        stub, task, "s3://pravah-in/src", destination="s3://pravah-out/dst", options=options
    )
    assert done[0].failed == 0 and not done[0].HasField("error"), results
    assert keys(s3, "pravah-out") == [f"dst/{k}" for k in outputs]
    if task == "decompress":
        body = s3.get_object(Bucket="pravah-out", Key="dst/a.log")["Body"].read()
        assert body == b"y" * 5000
    if task == "convert":
        body = s3.get_object(Bucket="pravah-out", Key="dst/t.jsonl")["Body"].read()
        rows = [json.loads(line) for line in body.splitlines()]
        assert rows == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_inventory_of_an_s3_prefix(stub: pb_grpc.EngineServiceStub, s3: Any) -> None:
    """Each object's own size and time, from a HEAD: it was downloaded, and
    the time was the staged copy's, the run's."""
    import time

    put_objects(s3, "pravah-in", {"inv/a.csv": b"12345", "inv/x/b.txt": b"1"})
    time.sleep(1.5)  # a copy made now would have another time
    results, done = process(stub, "inventory", "s3://pravah-in/inv")
    assert done[0].failed == 0, results
    assert sorted(results) == ["a.csv", "x/b.txt"]
    for rel in ("a.csv", "x/b.txt"):
        stored = s3.head_object(Bucket="pravah-in", Key=f"inv/{rel}")["LastModified"]
        assert results[rel]["modified"] == stored.strftime("%Y-%m-%dT%H:%M:%SZ"), results[rel]


def test_aws_endpoint_url_works_like_s3_endpoint_url(
    engine_bin: Path, moto_url: str, s3: Any
) -> None:
    put_objects(s3, "pravah-in", {"e/a.csv": b"x,y\n"})
    env = engine_env(moto_url, AWS_ENDPOINT_URL=moto_url)
    env.pop("S3_ENDPOINT_URL")
    with (
        LocalEngineSync(engine_bin, start_timeout=30, env=env) as url,
        grpc.insecure_channel(url) as channel,
    ):
        results, _ = process(pb_grpc.EngineServiceStub(channel), "csv-header", "s3://pravah-in/e")
    assert results == {"a.csv": {"columns": ["x", "y"]}}


def test_odd_keys_and_folder_markers(stub: pb_grpc.EngineServiceStub, s3: Any) -> None:
    odd = ["100%.csv", "a+b.csv", "q?x=1.csv", "h#ash.csv", "dir/x.csv"]
    put_objects(s3, "pravah-in", {f"k/{name}": b"c1,c2\n" for name in odd})
    # Folder markers as the S3 console makes them; "empty/" has no children,
    # and "zero.csv" is a real empty object.
    markers = {"k/dir/": b"", "k/empty/": b"", "k/zero.csv": b"", "k/tab\there.csv": b"t\n"}
    put_objects(s3, "pravah-in", markers)
    results, _ = process(stub, "csv-header", "s3://pravah-in/k")
    assert {k: v for k, v in results.items() if "columns" in v} == {
        name: {"columns": ["c1", "c2"]} for name in odd
    }
    assert "dir" not in results  # a marker with keys under it is no file
    # Nor one without: an empty folder (it was listed, then failed as no such object).
    assert "empty" not in results
    assert results["zero.csv"]["kind"] == pb.ERROR_KIND_INVALID_DATA  # an empty file
    assert results["tab\there.csv"]["kind"] == pb.ERROR_KIND_OUTSIDE_ROOT
    inventory, _ = process(stub, "inventory", "s3://pravah-in/k")
    assert "empty" not in inventory and "error" not in str(inventory["zero.csv"]), inventory


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _big_zip() -> bytes:
    """A ZIP of many small entries and one incompressible 6 MiB entry (more than a block)."""
    files = {f"img/{i:03d}.txt": f"file {i}\n".encode() * (i % 7 + 1) for i in range(400)}
    files["blob/random.bin"] = os.urandom(6 << 20)
    files["deep/a/b/c.txt"] = b"deep"
    return _zip(files)


def test_a_zip_on_s3_is_extracted_in_place_like_a_local_one(
    stub: pb_grpc.EngineServiceStub, s3: Any, tmp_path: Path, metrics_addr: str
) -> None:
    archive = _big_zip()
    local_src = tmp_path / "local"
    local_src.mkdir()
    (local_src / "pack.zip").write_bytes(archive)
    _, done = process(stub, "extract", str(local_src), destination=str(tmp_path / "from-local"))
    assert done[0].failed == 0
    put_objects(s3, "pravah-in", {"z/pack.zip": archive})
    # The workspace's staging folder, where a staged copy of the archive would
    # go (staging/objects/), cannot hold one: "objects" is a file.
    workspace = tmp_path / "ws"
    (workspace / "staging").mkdir(parents=True)
    (workspace / "staging" / "objects").write_text("not a folder")
    gets_before, bytes_before = s3_gets(metrics_addr)
    _, done = process(
        stub,
        "extract",
        "s3://pravah-in/z",
        destination=str(tmp_path / "from-s3"),
        results_dir=str(workspace / "results"),
    )
    gets_after, bytes_after = s3_gets(metrics_addr)
    gets, fetched = gets_after - gets_before, bytes_after - bytes_before
    assert done[0].files == 1 and done[0].failed == 0, done
    assert _tree(tmp_path / "from-s3") == _tree(tmp_path / "from-local")
    assert len(_tree(tmp_path / "from-s3" / "pack")) == 402
    # Block-sized ranged GETs, not one or two per entry: the archive is two
    # 4 MiB blocks (PRAVAH_S3_READ_BLOCK_BYTES), each fetched once and shared
    # by the threads that extract its 402 entries.
    assert (gets, fetched) == (2, len(archive))
    assert [p.name for p in (workspace / "staging").iterdir()] == ["objects"]


def test_an_output_already_on_s3_is_looked_up_before_the_work(
    stub: pb_grpc.EngineServiceStub, s3: Any, metrics_addr: str, tmp_path: Path
) -> None:
    """existing=skip (and fail) decide before a file is read, as locally:
    a re-run onto an S3 destination redoes none of the work it did."""
    src = tmp_path / "src"
    (src / "p").mkdir(parents=True)
    # Truncated: decoding it fails, so only a look-up first can skip it.
    (src / "p" / "img.jpg").write_bytes(_jpeg((640, 480))[:300])
    put_objects(s3, "pravah-out", {"t/p/img.jpg": b"an earlier thumbnail"})

    def thumbnail(**options: Any) -> dict[str, Any]:
        results, _ = process(
            stub,
            "thumbnail",
            str(src),
            destination="s3://pravah-out/t",
            options={"width": 64, "height": 64, **options},
        )
        return results["p/img.jpg"]

    assert thumbnail() == {"skipped": "output exists", "output": "p/img.jpg"}
    failed = thumbnail(existing="fail")
    assert "s3://pravah-out/t/p/img.jpg already exists" in failed["error"], failed
    assert "kind" in thumbnail(existing="overwrite")  # the decode error: now it was read
    assert s3.get_object(Bucket="pravah-out", Key="t/p/img.jpg")["Body"].read() == (
        b"an earlier thumbnail"
    )

    # An archive on S3 whose folder is already there: only its first block
    # is fetched, to tell its kind (and so its folder's name); extracting
    # would also fetch the second, where the ZIP's directory is.
    archive = _zip({"big.bin": os.urandom(6 << 20)})  # stored: two 4 MiB blocks
    put_objects(s3, "pravah-in", {"re/pack.zip": archive})
    put_objects(s3, "pravah-out", {"re/pack/big.bin": b"extracted before"})
    gets_before, _ = s3_gets(metrics_addr)
    results, _ = process(stub, "extract", "s3://pravah-in/re", destination="s3://pravah-out/re")
    gets_after, _ = s3_gets(metrics_addr)
    assert results == {"pack.zip": {"skipped": "output exists", "output": "pack"}}
    assert gets_after - gets_before == 1

    # From S3 to S3: a file whose output is there is not even downloaded.
    put_objects(s3, "pravah-in", {"th/p/a.jpg": _jpeg((640, 480)), "gz/b.log": b"b" * 4000})
    for task, prefix, options in (
        ("thumbnail", "th", {"width": 64, "height": 64}),
        ("compress", "gz", {}),
    ):
        src, dst = f"s3://pravah-in/{prefix}", f"s3://pravah-out/{prefix}"
        first, _ = process(stub, task, src, destination=dst, options=options)
        [(path, written)] = first.items()
        assert "output" in written and "skipped" not in written, written
        gets_before, _ = s3_gets(metrics_addr)
        again, _ = process(stub, task, src, destination=dst, options=options)
        failing, _ = process(
            stub, task, src, destination=dst, options={**options, "existing": "fail"}
        )
        gets_after, _ = s3_gets(metrics_addr)
        assert again == {path: {"skipped": "output exists", "output": written["output"]}}
        assert f"{dst}/{written['output']} already exists" in failing[path]["error"], failing
        assert gets_after == gets_before
    assert keys(s3, "pravah-out", "th/") + keys(s3, "pravah-out", "gz/") == [
        "th/p/a.jpg",
        "gz/b.log.gz",
    ]


def test_a_file_skipped_by_its_name_is_not_downloaded(
    stub: pb_grpc.EngineServiceStub, s3: Any, metrics_addr: str, tmp_path: Path
) -> None:
    """The nightly compress over a prefix that holds last night's .gz files
    fetches none of the objects it skips by their names, and still counts
    their bytes; thumbnail and convert skip files of other kinds unfetched."""
    old = gzip.compress(b"last night " * 1000)
    put_objects(
        s3,
        "pravah-in",
        {"nm/old.log.gz": old, "nm/new.log": b"tonight " * 500, "nm/meta.json": b"{}"},
    )
    gets_before, bytes_before = s3_gets(metrics_addr)
    compressed, done = process(stub, "compress", "s3://pravah-in/nm", destination=str(tmp_path))
    gets_after, bytes_after = s3_gets(metrics_addr)
    assert compressed["old.log.gz"] == {
        "skipped": "already compressed (set force to compress anyway)"
    }
    assert "bytes_out" in compressed["new.log"], compressed
    assert gets_after - gets_before == 2  # new.log and meta.json only
    assert bytes_after - bytes_before == 4000 + 2
    assert done[0].bytes == len(old) + 4000 + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json.gz", "new.log.gz"]

    for task, options, reason in (
        ("thumbnail", {"width": 64, "height": 64}, "not an image (by extension)"),
        ("convert", {"to": "parquet"}, "no conversion for this file type"),
    ):
        gets_before, _ = s3_gets(metrics_addr)
        skipped, _ = process(
            stub, task, "s3://pravah-in/nm", destination=str(tmp_path / task), options=options
        )
        gets_after, _ = s3_gets(metrics_addr)
        names = ("old.log.gz", "new.log", "meta.json")
        assert skipped == {name: {"skipped": reason} for name in names}, skipped
        assert gets_after == gets_before, task


def test_a_tar_gz_on_s3_is_streamed_by_blocks_not_staged(
    stub: pb_grpc.EngineServiceStub, s3: Any, tmp_path: Path
) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"a/b.txt": b"hello", "c.bin": os.urandom(5 << 20)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    put_objects(s3, "pravah-in", {"t/logs.tar.gz": buf.getvalue()})
    workspace = tmp_path / "ws"
    (workspace / "staging").mkdir(parents=True)
    (workspace / "staging" / "objects").write_text("no staged archive fits here")
    results, done = process(
        stub,
        "extract",
        "s3://pravah-in/t",
        destination=str(tmp_path / "out"),
        results_dir=str(workspace / "results"),
    )
    assert done[0].failed == 0, results
    assert (tmp_path / "out" / "logs" / "a" / "b.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "logs" / "c.bin").stat().st_size == 5 << 20


def test_a_zip_on_s3_to_s3_and_hostile_zips_are_refused_per_file(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    good = _zip({"docs/r.txt": b"r", "s.txt": b"s"})
    put_objects(
        s3,
        "pravah-in",
        {
            "h/good.zip": good,
            "h/truncated.zip": _big_zip()[: 3 << 20],
            "h/garbage.zip": b"PK\x03\x04" + os.urandom(5000),
            "h/slip.zip": _zip({"ok.txt": b"ok", "../../evil.txt": b"evil"}),
            "h/abs.zip": _zip({"/etc/evil.txt": b"evil"}),
        },
    )
    results, done = process(stub, "extract", "s3://pravah-in/h", destination="s3://pravah-out/x")
    assert done[0].files == 5 and done[0].failed == 4, results
    assert results["good.zip"]["entries"] == 2
    for name in ("truncated.zip", "garbage.zip"):
        assert results[name]["kind"] == pb.ERROR_KIND_INVALID_DATA, results[name]
        assert "not a readable ZIP archive" in results[name]["error"], results[name]
    for name in ("slip.zip", "abs.zip"):
        assert results[name]["kind"] == pb.ERROR_KIND_OUTSIDE_ROOT, results[name]
        assert "refused" in results[name]["error"]
    # Only the good archive's entries were written; nothing escaped the prefix.
    assert keys(s3, "pravah-out") == ["x/good/docs/r.txt", "x/good/s.txt"]


def test_the_existing_policy_applies_to_s3_destinations(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    put_objects(s3, "pravah-in", {"c/a.log": b"a" * 3000, "x/pack.zip": _zip({"n.txt": b"new"})})
    put_objects(
        s3,
        "pravah-out",
        {
            "d/a.log.gz": b"old output",
            "d/pack/old.txt": b"old",
            "d/pack/sub/older.txt": b"old",
            # Beside the folder, not in it: never touched.
            "d/pack-2/keep.txt": b"keep",
            "d/packed.txt": b"keep",
        },
    )

    def body(key: str) -> bytes:
        return bytes(s3.get_object(Bucket="pravah-out", Key=key)["Body"].read())

    def run(task: str, source: str, dest: str = "d", **options: str) -> dict[str, Any]:
        results, done = process(
            stub,
            task,
            f"s3://pravah-in/{source}",
            destination=f"s3://pravah-out/{dest}",
            options=options,
        )
        assert done[0].files == 1 and not done[0].HasField("error"), results
        [result] = results.values()
        return result

    # skip (the default): nothing uploaded, the file reported skipped.
    assert run("compress", "c") == {"skipped": "output exists", "output": "a.log.gz"}
    assert run("extract", "x") == {"skipped": "output exists", "output": "pack"}
    assert body("d/a.log.gz") == b"old output"
    untouched = ["d/pack-2/keep.txt", "d/packed.txt"]
    assert keys(s3, "pravah-out") == sorted(
        ["d/a.log.gz", "d/pack/old.txt", "d/pack/sub/older.txt", *untouched]
    )
    # fail: a per-file error naming the object.
    failed = run("compress", "c", existing="fail")
    assert "s3://pravah-out/d/a.log.gz already exists" in failed["error"], failed
    assert "s3://pravah-out/d/pack already exists" in run("extract", "x", existing="fail")["error"]
    assert body("d/a.log.gz") == b"old output"
    # overwrite: replaced, as before.
    assert "skipped" not in run("compress", "c", existing="overwrite")
    assert gzip.decompress(body("d/a.log.gz")) == b"a" * 3000
    assert run("extract", "x", existing="overwrite")["entries"] == 1
    assert body("d/pack/n.txt") == b"new"
    # The folder is replaced whole: what the old one had and the archive
    # lacks is gone; what is beside it stays.
    assert keys(s3, "pravah-out") == sorted(["d/a.log.gz", "d/pack/n.txt", *untouched])
    # A key nobody wrote yet is written under skip (a conditional PUT).
    assert "skipped" not in run("compress", "c", dest="e")
    assert "e/a.log.gz" in keys(s3, "pravah-out")


def test_a_key_segment_longer_than_a_file_name_is_still_processed(
    stub: pb_grpc.EngineServiceStub, s3: Any
) -> None:
    """S3 allows 1,024-byte keys; a staged copy named after a 300-byte
    segment failed with "File name too long"."""
    name = "L" * 300 + ".csv"
    put_objects(s3, "pravah-in", {f"long/{name}": b"a,b\n"})
    results, done = process(stub, "hash", "s3://pravah-in/long")
    assert done[0].failed == 0, results
    assert list(results) == [name] and len(results[name]["hash"]) == 64
