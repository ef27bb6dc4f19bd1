"""A plain Python gRPC client calling the engine directly (no control plane).

Uses the generated stubs as any gRPC user would, plus the standard health
service, to check the contract in engine.proto from the client's side.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pravah.engine.v1 import engine_pb2 as pb
from pravah.engine.v1 import engine_pb2_grpc as pb_grpc
from pravah.globs import glob_error

if TYPE_CHECKING:
    from conftest import CsvTree


@pytest.fixture
def stub(engine_url: str) -> pb_grpc.EngineServiceStub:
    channel = grpc.insecure_channel(engine_url)
    yield pb_grpc.EngineServiceStub(channel)
    channel.close()


def test_health_check_reports_serving(engine_url: str) -> None:
    with grpc.insecure_channel(engine_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_capabilities_declare_csv_header_with_schemas(stub: pb_grpc.EngineServiceStub) -> None:
    caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
    assert caps.engine_version
    tasks = {t.name: t for t in caps.tasks}
    csv = tasks["csv-header"]
    assert json.loads(csv.options_schema_json)["type"] == "object"
    assert "columns" in json.loads(csv.result_schema_json)["properties"]
    assert caps.limits.max_batch_files > 0


def test_list_streams_entries_and_summary(
    stub: pb_grpc.EngineServiceStub, csv_tree: CsvTree
) -> None:
    entries: list[pb.FileEntry] = []
    summary = None
    for msg in stub.List(pb.ListRequest(source=str(csv_tree.root)), timeout=30):
        kind = msg.WhichOneof("message")
        if kind == "batch":
            entries.extend(msg.batch.entries)
        elif kind == "summary":
            summary = msg.summary
    assert summary is not None
    paths = {e.path for e in entries}
    assert paths == set(csv_tree.expected) | csv_tree.failing
    assert summary.files == len(paths)
    raw = {e.raw_path for e in entries if e.raw_path}
    assert raw == {b"nested/r\xe9sum\xe9.csv"}


def test_list_missing_source_is_not_found(stub: pb_grpc.EngineServiceStub, tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.List(pb.ListRequest(source=str(tmp_path / "missing")), timeout=10))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "missing" in info.value.details()


def test_process_file_list_streams_results(
    stub: pb_grpc.EngineServiceStub, csv_tree: CsvTree
) -> None:
    names = ["plain.csv", "quoted.csv", "binary.csv", "does-not-exist.csv"]

    def requests() -> object:
        yield pb.ProcessRequest(start=pb.ProcessStart(task="csv-header", job_id="grpc-test"))
        yield pb.ProcessRequest(
            work=pb.WorkItem(
                id="files",
                files=pb.FileList(
                    root=str(csv_tree.root), files=[pb.FileEntry(path=n) for n in names]
                ),
            )
        )

    results: dict[str, pb.FileResult] = {}
    done = None
    summary = None
    for msg in stub.Process(requests(), timeout=30):
        kind = msg.WhichOneof("event")
        if kind == "batch":
            assert msg.batch.work_id == "files"
            results.update({r.path: r for r in msg.batch.results})
        elif kind == "item_done":
            done = msg.item_done
        elif kind == "summary":
            summary = msg.summary
    assert set(results) == set(names)
    assert json.loads(results["plain.csv"].result_json)["columns"] == ["id", "name", "amount"]
    assert json.loads(results["quoted.csv"].result_json)["columns"] == [
        "id",
        "full, name",
        "note\nline2",
    ]
    assert results["binary.csv"].error.kind == pb.ERROR_KIND_INVALID_DATA
    # A file gone between listing and processing is a per-file error.
    assert results["does-not-exist.csv"].error.kind == pb.ERROR_KIND_NOT_FOUND
    assert done is not None and done.files == 4 and done.failed == 2
    assert summary is not None
    assert summary.totals.files_done == 4
    assert json.loads(summary.summary_json)["distinct_schemas"] == 2


def test_process_unknown_task_is_invalid_argument(stub: pb_grpc.EngineServiceStub) -> None:
    def requests() -> object:
        yield pb.ProcessRequest(start=pb.ProcessStart(task="no-such-task"))

    with pytest.raises(grpc.RpcError) as info:
        list(stub.Process(requests(), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-such-task" in info.value.details()


def test_process_unknown_option_is_invalid_argument(stub: pb_grpc.EngineServiceStub) -> None:
    def requests() -> object:
        yield pb.ProcessRequest(
            start=pb.ProcessStart(task="csv-header", options_json=json.dumps({"colour": 1}))
        )

    with pytest.raises(grpc.RpcError) as info:
        list(stub.Process(requests(), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "colour" in info.value.details()


# Globs at the edges of globset's grammar: classes with `]`, `-`, `!` and
# POSIX names, ranges chained and reversed, alternates nested and unbalanced,
# escapes, and `**` in every position.
_GLOB_EDGES = [
    "*.csv", "**/*.csv", "a/**", "**", "a**b", "{a,**/b}", "[", "[]", "[]]", "[!]", "[!]]", "[^]a]",
    "[]a]", "[-]", "[a-]", "[-a]", "[a-c-b]", "[c-a]", "[z--]", "[a--]", "[!a-z]", "[[]",
    "[[:digit:]]", "[[:digit:]-a]", "[[:alpha:]-Z]", "[[:punct:]-z]", "[[:foo:]]", "[[:foo:]-Z]",
    "[[:x]", "[[:toolongname:]]", "[[:Alpha:]]", "[a-[:digit:]]", "{a,b", "{a,b}}", "a,b}",
    "}", "{}", "{,}", "{a,{b,c}}", "{a,{b,c}", "{[}]",
    "\\", "a\\", "\\*", "\\[", "[\\]", "[\\]]", "é[é-ü]",
    "{" * 100 + "}" * 100, "{" * 101 + "}" * 101,
]  # fmt: skip


def _engine_refusal(stub: pb_grpc.EngineServiceStub, source: Path, glob: str) -> str | None:
    """The engine's reason for refusing `glob` as an include filter, or None."""
    request = pb.ListRequest(source=str(source), filters=pb.Filters(include=[glob]))
    try:
        list(stub.List(request, timeout=10))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        return str(exc.details())
    return None


def test_the_control_plane_refuses_exactly_the_globs_the_engine_refuses(
    stub: pb_grpc.EngineServiceStub, tmp_path: Path
) -> None:
    """pravah.globs ports globset's grammar so a bad glob is a 4xx, not a failed
    job; this keeps the port honest against the engine it stands in for."""
    rng = random.Random(20261201)
    alphabet = "[]{}!^-,\\*?/:az0"
    fuzzed = ["".join(rng.choices(alphabet, k=rng.randint(1, 10))) for _ in range(600)]
    refused = 0
    for glob in _GLOB_EDGES + fuzzed:
        engine = _engine_refusal(stub, tmp_path, glob)
        ours = glob_error(glob)
        assert (ours is None) == (engine is None), (glob, ours, engine)
        if ours is not None:
            refused += 1
            assert ours in str(engine), (glob, ours, engine)
    # Both outcomes are well represented, or the comparison proves little.
    assert 150 < refused < 500
