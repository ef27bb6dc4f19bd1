"""The engine on its own: allowed roots, special files, TLS and mutual TLS.

These talk to `pravah-engine` directly over gRPC, as a stray client on the
network would, so they prove the engine's checks and not the control
plane's. Certificates come from a throwaway CA made by `trustme`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from pravah.engine.v1 import engine_pb2 as pb
from pravah.engine.v1 import engine_pb2_grpc as pb_grpc
from pravah.engine_client import EngineClient
from pravah.engine_launcher import LocalEngineSync
from pravah.settings import Settings


def _engine(engine_bin: Path, **env: str) -> LocalEngineSync:
    return LocalEngineSync(engine_bin, start_timeout=30, env={**os.environ, **env})


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sandbox")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.csv").write_text("x,y\n1,2\n")
    (base / "outside").mkdir()
    (base / "outside" / "secret.csv").write_text("password\nhunter2\n")
    (root / "data" / "escape").symlink_to(base / "outside")
    (root / "data" / "loop").symlink_to(root / "data")
    os.mkfifo(root / "data" / "pipe.csv")
    return base


@pytest.fixture(scope="module")
def sandboxed_url(engine_bin: Path, sandbox: Path) -> Iterator[str]:
    with _engine(engine_bin, PRAVAH_ALLOWED_ROOTS=str(sandbox / "root")) as url:
        yield url


def _list(stub: pb_grpc.EngineServiceStub, source: str, **kw: object) -> list[pb.ListResponse]:
    return list(stub.List(pb.ListRequest(source=source, **kw), timeout=20))  # type: ignore[arg-type]


def _file_list(root: Path, *files: str | pb.FileEntry) -> pb.WorkItem:
    """A work item naming `files` (paths, or entries with sizes) under `root`."""
    entries = [pb.FileEntry(path=f) if isinstance(f, str) else f for f in files]
    return pb.WorkItem(id="files", files=pb.FileList(root=str(root), files=entries))


def _results(events: list[pb.ProcessResponse]) -> dict[str, pb.FileResult]:
    """Each file's result, by path."""
    return {f.path: f for e in events if e.HasField("batch") for f in e.batch.results}


def _process(
    stub: pb_grpc.EngineServiceStub, item: pb.WorkItem, task: str = "csv-header"
) -> list[pb.ProcessResponse]:
    requests = iter(
        [pb.ProcessRequest(start=pb.ProcessStart(task=task)), pb.ProcessRequest(work=item)]
    )
    return list(stub.Process(requests, timeout=20))


def test_direct_client_outside_allowed_roots_is_permission_denied(
    sandboxed_url: str, sandbox: Path
) -> None:
    with grpc.insecure_channel(sandboxed_url) as channel:
        stub = pb_grpc.EngineServiceStub(channel)
        for source in (
            str(sandbox / "outside"),
            str(sandbox / "root" / "data" / ".." / ".." / "outside"),
            f"file://{sandbox / 'outside'}",
            str(sandbox / "root" / "data" / "escape"),  # a symlink out of the root
            "/",
            "/etc",
        ):
            with pytest.raises(grpc.RpcError) as info:
                _list(stub, source)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, source
            assert "allowed roots" in (info.value.details() or "")
        # Writing chunks outside is refused too, and creates nothing.
        target = sandbox / "outside" / "chunks"
        with pytest.raises(grpc.RpcError) as info:
            _list(stub, str(sandbox / "root" / "data"), chunk_dir=str(target))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert not target.exists()
        # Process: the work item fails as outside_root; no file is read.
        events = _process(
            stub, pb.WorkItem(id="w", source=pb.SourceSpec(source=str(sandbox / "outside")))
        )
        done = [e.item_done for e in events if e.HasField("item_done")]
        assert done and done[0].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT


def test_inside_root_works_and_skips_links_loops_and_fifos(
    sandboxed_url: str, sandbox: Path
) -> None:
    with grpc.insecure_channel(sandboxed_url) as channel:
        stub = pb_grpc.EngineServiceStub(channel)
        started = time.monotonic()
        responses = _list(
            stub,
            str(sandbox / "root" / "data"),
            filters=pb.Filters(follow_symlinks=True),
        )
        paths = {e.path for r in responses if r.HasField("batch") for e in r.batch.entries}
        assert paths == {"a.csv"}  # no FIFO, no loop, nothing from outside
        # A FIFO named directly is refused at once instead of blocking the worker.
        data = sandbox / "root" / "data"
        results = _results(_process(stub, _file_list(data, "pipe.csv", "../../outside/x")))
        assert "regular file" in results["pipe.csv"].error.message
        assert results["../../outside/x"].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT
        assert time.monotonic() - started < 15
        # A path out of the root is refused even where its name alone would
        # have the task skip it (compress and an already compressed name).
        named = [
            pb.FileEntry(path="../../outside/x.gz", size=10),
            pb.FileEntry(path="in.gz", size=10),
        ]
        results = _results(_process(stub, _file_list(data, *named), task="compress"))
        assert results["../../outside/x.gz"].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT
        assert "already compressed" in results["in.gz"].result_json


def test_symlinks_out_of_the_root_are_never_read_through_a_file_list(
    sandboxed_url: str, sandbox: Path
) -> None:
    # The relative paths are clean, so only the open itself can see that
    # `escape` is a folder symlink leading out of the root.
    data = sandbox / "root" / "data"
    (data / "secret-link.csv").unlink(missing_ok=True)
    (data / "secret-link.csv").symlink_to(sandbox / "outside" / "secret.csv")
    with grpc.insecure_channel(sandboxed_url) as channel:
        stub = pb_grpc.EngineServiceStub(channel)
        events = _process(stub, _file_list(data, "escape/secret.csv", "secret-link.csv", "a.csv"))
    results = _results(events)
    for name in ("escape/secret.csv", "secret-link.csv"):
        assert results[name].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT, name
        assert "outside the source root" in results[name].error.message
    assert "password" not in str(events)
    assert results["a.csv"].HasField("result_json")


def test_device_files_are_refused(sandboxed_url: str, tmp_path: Path) -> None:
    # /dev is outside the root: refused by the sandbox; without roots, by type.
    with grpc.insecure_channel(sandboxed_url) as channel:
        stub = pb_grpc.EngineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            _list(stub, "/dev")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_device_file_in_a_tree_is_never_opened(engine_url: str, tmp_path: Path) -> None:
    (tmp_path / "null.csv").symlink_to("/dev/null")
    (tmp_path / "ok.csv").write_text("a\n")
    with grpc.insecure_channel(engine_url) as channel:
        stub = pb_grpc.EngineServiceStub(channel)
        results = _results(_process(stub, _file_list(tmp_path, "null.csv", "ok.csv")))
        # A symlink to a device outside the work item's root is refused before any open.
        assert results["null.csv"].error.kind == pb.ERROR_KIND_OUTSIDE_ROOT
        assert results["ok.csv"].HasField("result_json")


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("pravah-control-plane")
    stray = other_ca.issue_cert("stray")
    files = {
        "ca": base / "ca.pem",
        "other_ca": base / "other.pem",
        "server_cert": base / "server.pem",
        "server_key": base / "server.key",
        "client_cert": base / "client.pem",
        "client_key": base / "client.key",
        "stray_cert": base / "stray.pem",
        "stray_key": base / "stray.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["server_cert"].write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    files["client_cert"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    stray.private_key_pem.write_to_path(str(files["stray_key"]))
    files["stray_cert"].write_bytes(b"".join(b.bytes() for b in stray.cert_chain_pems))
    return files


def _capabilities(url: str, creds: grpc.ChannelCredentials | None) -> list[str]:
    channel = grpc.secure_channel(url, creds) if creds is not None else grpc.insecure_channel(url)
    with channel:
        stub = pb_grpc.EngineServiceStub(channel)
        reply = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
        return [t.name for t in reply.tasks]


def _creds(pki: dict[str, Path], ca: str, cert: str | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki[ca].read_bytes(),
        private_key=pki[f"{cert}_key"].read_bytes() if cert else None,
        certificate_chain=pki[f"{cert}_cert"].read_bytes() if cert else None,
    )


def test_tls_engine_refuses_plaintext_and_wrong_ca(engine_bin: Path, pki: dict[str, Path]) -> None:
    env = {
        "PRAVAH_ENGINE_TLS_CERT": str(pki["server_cert"]),
        "PRAVAH_ENGINE_TLS_KEY": str(pki["server_key"]),
    }
    with _engine(engine_bin, **env) as url:
        assert "csv-header" in _capabilities(url, _creds(pki, "ca"))
        with pytest.raises(grpc.RpcError):
            _capabilities(url, None)  # plaintext
        with pytest.raises(grpc.RpcError):
            _capabilities(url, _creds(pki, "other_ca"))  # server not trusted


async def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    engine_bin: Path, pki: dict[str, Path], tmp_path: Path
) -> None:
    env = {
        "PRAVAH_ENGINE_TLS_CERT": str(pki["server_cert"]),
        "PRAVAH_ENGINE_TLS_KEY": str(pki["server_key"]),
        "PRAVAH_ENGINE_TLS_CLIENT_CA": str(pki["ca"]),
    }
    with _engine(engine_bin, **env) as url:
        assert "csv-header" in _capabilities(url, _creds(pki, "ca", "client"))
        for creds in (None, _creds(pki, "ca"), _creds(pki, "ca", "stray")):
            with pytest.raises(grpc.RpcError):
                _capabilities(url, creds)
        # The control plane's own client, configured from settings.
        settings = Settings(
            state_dir=tmp_path,
            engine_tls_ca_file=pki["ca"],
            engine_tls_cert_file=pki["client_cert"],
            engine_tls_key_file=pki["client_key"],
        )
        async with EngineClient.from_settings(url, settings) as client:
            assert "csv-header" in (await client.capabilities()).tasks
