"""Async gRPC client of one Pravah engine.

Why a wrapper over the generated stub: the rest of the control plane works
with plain dataclasses (no protobuf types leak into the job store, API or
CLI), and gRPC failures become PravahError subclasses carrying the engine's
own message, so callers handle "source not found" the same way whether it
came from the engine or from local validation.

Cancellation: `process()` is an async iterator; closing it (break, task
cancellation, `aclose()`) cancels the gRPC call, which makes the engine stop
the work (the proto: "dropping the call cancels the work").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio

from pravah.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    JobCancelledError,
    NotFoundError,
    PravahError,
)
from pravah.models import JobFilters
from pravah.settings import Settings
from pravah.telemetry import client_call

try:
    from pravah.engine.v1 import engine_pb2 as pb
    from pravah.engine.v1 import engine_pb2_grpc as pb_grpc
except ImportError as _exc:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "the gRPC stubs are missing; generate them with `python scripts/gen_proto.py` "
        "(or `make proto`)"
    ) from _exc

# Large enough for capability documents and big result batches.
_MAX_MESSAGE = 64 * 1024 * 1024
_ERROR_KINDS = {
    pb.ERROR_KIND_UNSPECIFIED: "unspecified",
    pb.ERROR_KIND_NOT_FOUND: "not_found",
    pb.ERROR_KIND_PERMISSION_DENIED: "permission_denied",
    pb.ERROR_KIND_IO: "io",
    pb.ERROR_KIND_INVALID_DATA: "invalid_data",
    pb.ERROR_KIND_LIMIT_EXCEEDED: "limit_exceeded",
    pb.ERROR_KIND_OUTSIDE_ROOT: "outside_root",
    pb.ERROR_KIND_INTERNAL: "internal",
}


# --------------------------------------------------------------------- data


@dataclass(frozen=True)
class TaskInfo:
    """One task the engine offers, with its JSON Schemas parsed."""

    name: str
    version: str
    description: str
    options_schema: dict[str, Any]
    result_schema: dict[str, Any]
    writes_files: bool = False
    # Work per file independent of its size (csv-header, inventory): its
    # listing skips file sizes and its progress counts files.
    size_independent: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do (GetCapabilities, as plain data)."""

    engine_version: str
    tasks: dict[str, TaskInfo]
    worker_threads: int = 0
    max_batch_files: int = 0
    max_work_items: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as served by GET /config."""
        return {
            "engine_version": self.engine_version,
            "tasks": [
                {
                    "name": t.name,
                    "version": t.version,
                    "description": t.description,
                    "options_schema": t.options_schema,
                    "result_schema": t.result_schema,
                    "writes_files": t.writes_files,
                    "size_independent": t.size_independent,
                }
                for t in self.tasks.values()
            ],
            "limits": {
                "worker_threads": self.worker_threads,
                "max_batch_files": self.max_batch_files,
                "max_work_items": self.max_work_items,
            },
        }


@dataclass(frozen=True)
class FileErrorInfo:
    """A file or directory that could not be listed or processed."""

    path: str
    kind: str
    message: str
    raw_path: bytes = b""


@dataclass(frozen=True)
class ChunkInfo:
    """One listing chunk file written by List."""

    index: int
    uri: str
    files: int
    bytes: int


@dataclass(frozen=True)
class ListSummaryInfo:
    """Totals of a List call."""

    files: int
    bytes: int
    directories: int
    errors: int
    elapsed_ms: int
    root: str


@dataclass
class ListResult:
    """Everything a List-to-chunks call returned (errors capped at `max_errors`)."""

    chunks: list[ChunkInfo]
    summary: ListSummaryInfo
    errors: list[FileErrorInfo] = field(default_factory=list)
    # False when the listing was asked without sizes: its byte totals are 0,
    # not the bytes of the files.
    sizes: bool = True


@dataclass(frozen=True)
class ProgressEvent:
    """Cumulative counts for the whole Process call."""

    files_done: int
    files_failed: int
    bytes_done: int
    bytes_failed: int
    files_discovered: int
    bytes_discovered: int
    discovery_complete: bool
    elapsed_ms: int


@dataclass(frozen=True)
class BatchEvent:
    """One processed batch; `results` holds parsed result objects when streamed."""

    work_id: str
    sequence: int
    files: int
    failed: int
    part_uri: str
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ItemDoneEvent:
    """One work item finished; `error` is set when the item as a whole failed."""

    work_id: str
    files: int
    failed: int
    bytes: int
    error: FileErrorInfo | None


@dataclass(frozen=True)
class SummaryEvent:
    """The final message of a Process call."""

    totals: ProgressEvent
    summary: dict[str, Any]
    part_uris: list[str]


ProcessEvent = ProgressEvent | BatchEvent | ItemDoneEvent | SummaryEvent


@dataclass(frozen=True)
class ChunkWork:
    """Work item: a chunk written by List."""

    id: str
    uri: str
    root: str


@dataclass(frozen=True)
class FilesWork:
    """Work item: files named directly, relative to root."""

    id: str
    root: str
    paths: Sequence[str]


@dataclass(frozen=True)
class SourceWork:
    """Work item: a source for the engine to walk itself."""

    id: str
    source: str
    filters: JobFilters | None = None


WorkSpec = ChunkWork | FilesWork | SourceWork


# --------------------------------------------------------------- converters


def filters_to_proto(filters: JobFilters | None) -> pb.Filters:
    """The engine's Filters message for the job's filters.

    Ages still in `filters` count back from now; a job's runner resolves
    them from the job's creation first (JobFilters.resolved).
    """
    if filters is None:
        return pb.Filters()
    filters = filters.resolved(datetime.now(UTC))
    msg = pb.Filters(
        include=filters.include,
        exclude=filters.exclude,
        extensions=[e.lstrip(".") for e in filters.extensions],
        include_hidden=filters.include_hidden,
        follow_symlinks=filters.follow_symlinks,
    )
    if filters.min_size is not None:
        msg.min_size = filters.min_size
    if filters.max_size is not None:
        msg.max_size = filters.max_size
    if filters.max_depth is not None:
        msg.max_depth = filters.max_depth
    if filters.modified_after is not None:
        msg.modified_after.FromDatetime(filters.modified_after)
    if filters.modified_before is not None:
        msg.modified_before.FromDatetime(filters.modified_before)
    return msg


def _file_error(msg: pb.FileError) -> FileErrorInfo:
    return FileErrorInfo(
        path=msg.path,
        kind=_ERROR_KINDS.get(msg.kind, "unspecified"),
        message=msg.message,
        raw_path=msg.raw_path,
    )


def _progress(msg: pb.Progress) -> ProgressEvent:
    return ProgressEvent(
        files_done=msg.files_done,
        files_failed=msg.files_failed,
        bytes_done=msg.bytes_done,
        bytes_failed=msg.bytes_failed,
        files_discovered=msg.files_discovered,
        bytes_discovered=msg.bytes_discovered,
        discovery_complete=msg.discovery_complete,
        elapsed_ms=msg.elapsed_ms,
    )


def _parse_json(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError(f"engine sent invalid JSON for {what}: {exc}") from exc
    if not isinstance(value, dict):
        raise EngineError(f"engine sent a non-object JSON value for {what}")
    return value


def _result_dict(msg: pb.FileResult) -> dict[str, Any]:
    out: dict[str, Any] = {"path": msg.path, "size": msg.size}
    if msg.HasField("error"):
        out["error"] = msg.error.message
        out["error_kind"] = _ERROR_KINDS.get(msg.error.kind, "unspecified")
    elif msg.result_json:
        out.update(_parse_json(msg.result_json, f"the result of {msg.path}"))
    return out


def _work_item(spec: WorkSpec) -> pb.WorkItem:
    if isinstance(spec, ChunkWork):
        return pb.WorkItem(id=spec.id, chunk=pb.ChunkRef(uri=spec.uri, root=spec.root))
    if isinstance(spec, FilesWork):
        return pb.WorkItem(
            id=spec.id,
            files=pb.FileList(root=spec.root, files=[pb.FileEntry(path=p) for p in spec.paths]),
        )
    return pb.WorkItem(
        id=spec.id,
        source=pb.SourceSpec(source=spec.source, filters=filters_to_proto(spec.filters)),
    )


def map_rpc_error(exc: grpc.aio.AioRpcError, url: str) -> PravahError:
    """The PravahError for a failed call, keeping the engine's own message."""
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        # The engine's own sandbox refused a path (its allowed roots).
        return InvalidRequestError(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidRequestError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return EngineUnavailableError(f"engine at {url} is unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EngineUnavailableError(f"engine at {url} did not answer in time: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return JobCancelledError(f"the call to engine at {url} was cancelled: {details}")
    return EngineError(f"engine at {url} failed ({code.name}): {details}")


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials for engine channels, or None for plaintext.

    PRAVAH_ENGINE_TLS_CA_FILE turns TLS on (the engines' certificates must be
    signed by that CA); PRAVAH_ENGINE_TLS_CERT_FILE/KEY_FILE add the client
    certificate an engine started with --tls-client-ca requires.
    """
    if settings.engine_tls_ca_file is None:
        return None
    try:
        ca = settings.engine_tls_ca_file.read_bytes()
        cert = key = None
        if settings.engine_tls_cert_file is not None and settings.engine_tls_key_file is not None:
            cert = settings.engine_tls_cert_file.read_bytes()
            key = settings.engine_tls_key_file.read_bytes()
    except OSError as exc:
        raise EngineUnavailableError(
            f"cannot read the engine TLS files: {exc.strerror}: {exc.filename}"
        ) from None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def target_of(url: str) -> str:
    """A gRPC target from an engine URL ("http://h:p", "grpc://h:p" or "h:p")."""
    for scheme in ("http://", "grpc://", "https://"):
        if url.startswith(scheme):
            return url[len(scheme) :].rstrip("/")
    return url


# ------------------------------------------------------------------- client


class EngineClient:
    """Async client of one engine; use as `async with EngineClient(url) as client:`."""

    def __init__(self, url: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.url = url
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target_of(url), options=options)
        else:
            self._channel = grpc.aio.secure_channel(target_of(url), credentials, options=options)
        self._stub = pb_grpc.EngineServiceStub(self._channel)  # type: ignore[no-untyped-call]

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> EngineClient:
        """A client of `url` over TLS (mutual when a client cert is set) if settings say so."""
        return cls(url, channel_credentials(settings))

    async def close(self) -> None:
        """Close the channel (cancels calls still running)."""
        await self._channel.close(grace=None)

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def capabilities(self, deadline: float | None = 10.0) -> Capabilities:
        """GetCapabilities (within `deadline` seconds), with option and result schemas parsed."""
        rpc = client_call("GetCapabilities", target_of(self.url))
        try:
            resp = await self._stub.GetCapabilities(
                pb.GetCapabilitiesRequest(), timeout=deadline, metadata=rpc.metadata
            )
        except grpc.aio.AioRpcError as exc:
            rpc.end(exc.code().name, exc.details())
            raise map_rpc_error(exc, self.url) from None
        except BaseException as exc:
            rpc.end("CANCELLED", type(exc).__name__)
            raise
        rpc.end()
        tasks = {
            t.name: TaskInfo(
                name=t.name,
                version=t.version,
                description=t.description,
                options_schema=_parse_json(t.options_schema_json, f"{t.name} options schema"),
                result_schema=_parse_json(t.result_schema_json, f"{t.name} result schema"),
                writes_files=t.writes_files,
                size_independent=t.size_independent,
            )
            for t in resp.tasks
        }
        return Capabilities(
            engine_version=resp.engine_version,
            tasks=tasks,
            worker_threads=resp.limits.worker_threads,
            max_batch_files=resp.limits.max_batch_files,
            max_work_items=resp.limits.max_work_items,
        )

    async def list_to_chunks(
        self,
        source: str,
        chunk_dir: str,
        filters: JobFilters | None = None,
        *,
        batch_size: int = 0,
        on_chunk: Callable[[ChunkInfo], None] | None = None,
        max_errors: int = 100,
        sizes: bool = True,
    ) -> ListResult:
        """List `source` into chunk files under `chunk_dir`; return descriptors and totals.

        `on_chunk` is called per chunk as it arrives (for listing progress).
        With `sizes=False` the engine reads no file metadata the filters do
        not need (one stat per file less); entries and totals then have no
        sizes. Raises NotFoundError when the source does not exist.
        """
        request = pb.ListRequest(
            source=source,
            filters=filters_to_proto(filters),
            batch_size=batch_size,
            chunk_dir=chunk_dir,
            skip_metadata=not sizes,
        )
        chunks: list[ChunkInfo] = []
        errors: list[FileErrorInfo] = []
        summary: ListSummaryInfo | None = None
        rpc = client_call("List", target_of(self.url))
        call = self._stub.List(request, metadata=rpc.metadata)
        try:
            async for msg in call:
                kind = msg.WhichOneof("message")
                if kind == "chunk":
                    chunk = ChunkInfo(
                        index=msg.chunk.index,
                        uri=msg.chunk.uri,
                        files=msg.chunk.files,
                        bytes=msg.chunk.bytes,
                    )
                    chunks.append(chunk)
                    if on_chunk is not None:
                        on_chunk(chunk)
                elif kind == "error":
                    if len(errors) < max_errors:
                        errors.append(_file_error(msg.error))
                elif kind == "summary":
                    s = msg.summary
                    summary = ListSummaryInfo(
                        files=s.files,
                        bytes=s.bytes,
                        directories=s.directories,
                        errors=s.errors,
                        elapsed_ms=s.elapsed_ms,
                        root=s.root,
                    )
        except grpc.aio.AioRpcError as exc:
            rpc.end(exc.code().name, exc.details())
            raise map_rpc_error(exc, self.url) from None
        except BaseException as exc:
            rpc.end("CANCELLED", type(exc).__name__)
            raise
        finally:
            call.cancel()
            rpc.span.set_attribute("pravah.chunks", len(chunks))
            rpc.end()
        if summary is None:
            raise EngineError(f"engine at {self.url} ended the listing without a summary")
        return ListResult(chunks=chunks, summary=summary, errors=errors, sizes=sizes)

    async def process(
        self,
        task: str,
        work: Iterable[WorkSpec],
        *,
        options: dict[str, Any] | None = None,
        results_dir: str = "",
        destination: str = "",
        job_id: str = "",
        progress_interval_ms: int = 0,
        encryption: tuple[str, str] | None = None,
    ) -> AsyncIterator[ProcessEvent]:
        """Run `task` over the work items; yield events until the Summary.

        `encryption` is the (mode, KMS key id) of objects written to an s3://
        destination (None: the engine's default). Closing the iterator early
        cancels the call and the engine's work.
        """
        items = list(work)

        async def requests() -> AsyncIterator[pb.ProcessRequest]:
            yield pb.ProcessRequest(
                start=pb.ProcessStart(
                    task=task,
                    options_json=json.dumps(options) if options else "",
                    results_dir=results_dir,
                    destination=destination,
                    job_id=job_id,
                    progress_interval_ms=progress_interval_ms,
                    encryption=(
                        pb.Encryption(mode=encryption[0], kms_key_id=encryption[1])
                        if encryption is not None
                        else None
                    ),
                )
            )
            for spec in items:
                yield pb.ProcessRequest(work=_work_item(spec))

        rpc = client_call("Process", target_of(self.url))
        if job_id:
            rpc.span.set_attribute("pravah.job_id", job_id)
        rpc.span.set_attribute("pravah.task", task)
        rpc.span.set_attribute("pravah.work_items", len(items))
        call = self._stub.Process(requests(), metadata=rpc.metadata)
        try:
            async for msg in call:
                kind = msg.WhichOneof("event")
                if kind == "progress":
                    yield _progress(msg.progress)
                elif kind == "batch":
                    b = msg.batch
                    yield BatchEvent(
                        work_id=b.work_id,
                        sequence=b.sequence,
                        files=b.files,
                        failed=b.failed,
                        part_uri=b.part_uri,
                        results=[_result_dict(r) for r in b.results],
                    )
                elif kind == "item_done":
                    d = msg.item_done
                    yield ItemDoneEvent(
                        work_id=d.work_id,
                        files=d.files,
                        failed=d.failed,
                        bytes=d.bytes,
                        error=_file_error(d.error) if d.HasField("error") else None,
                    )
                elif kind == "summary":
                    s = msg.summary
                    yield SummaryEvent(
                        totals=_progress(s.totals),
                        summary=_parse_json(s.summary_json, "the task summary"),
                        part_uris=list(s.part_uris),
                    )
        except grpc.aio.AioRpcError as exc:
            rpc.end(exc.code().name, exc.details())
            raise map_rpc_error(exc, self.url) from None
        except BaseException as exc:
            rpc.end("CANCELLED", type(exc).__name__)
            raise
        finally:
            call.cancel()
            rpc.end()
