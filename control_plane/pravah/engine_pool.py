"""Spreading one job's chunks over every configured engine.

Why a module of its own: the runner only says "run these chunks"; which
engine takes which chunk, how many are in flight, and what happens when an
engine dies are decided here.

- Engines come from `PRAVAH_ENGINE_URLS` (a comma list). An entry whose host
  name resolves to several addresses (a Kubernetes headless Service, a DNS
  round robin) stands for one engine per address; names are resolved again
  for every job, so engines added by scaling take part in the next job.
- Each chunk is one `Process` call with one work item. That keeps a chunk's
  outcome (its summary, its part files, whether it finished) separate from
  every other chunk's, which is what makes chunks checkpoints. Calls are
  chunky (a chunk is thousands of files), so the extra call costs nothing
  measurable.
- Every engine has a *feeder* task that keeps up to `window` chunk calls in
  flight, pulling from one shared queue. The window comes from the engine's
  own thread count (GetCapabilities; `PRAVAH_ENGINE_WINDOW` overrides), so a
  bigger engine has more chunks in flight, and a faster one comes back for
  the next chunk sooner: it ends up with more of the job. No engine takes a
  second chunk in flight before every live engine has its first, so a job
  of only a few chunks still uses every engine.
- An engine whose call fails as a whole (unreachable, killed, broken stream)
  is marked down for the rest of the run; its chunk goes back to the queue
  for the others and counts one attempt against the chunk. A chunk that
  brought down `chunk_max_attempts` engines is failed instead of taking down
  every engine in turn. When no engine is left, the run raises
  EngineUnavailableError (the job is retried later; finished chunks stay).
- Errors that are not about the engine (bad options, unknown task) end the
  run at once: every engine would answer the same.

Termination: the shared queue holds every chunk not yet taken; a chunk
leaves it for exactly one call and comes back only when that call failed
(put back before anything else is awaited, so it cannot be lost). A feeder
runs until every chunk is settled, or until its engine is down; then it
waits for its other calls to end by themselves instead of cancelling them,
so no call is cut short while it records its checkpoint. `run_chunks`
returns when every chunk is done or failed, and raises as soon as no live
engine is left while chunks remain. Cancelling it cancels
the feeders, whose calls are cancelled in turn (the engine stops the work).
Chunks may also arrive while the run goes (a listing still in progress):
then "every chunk" means every chunk of the exhausted source, so the run
cannot end between two chunks of a listing, and a failed listing ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pravah.engine_client import (
    BatchEvent,
    Capabilities,
    ChunkWork,
    EngineClient,
    FileErrorInfo,
    ItemDoneEvent,
    ProgressEvent,
    SummaryEvent,
    target_of,
)
from pravah.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
)
from pravah.log import get_logger

log = get_logger(__name__)

# Window when neither the setting nor the engine's thread count says more.
_DEFAULT_WINDOW = 2
_MAX_WINDOW = 16


def _split_host_port(url: str) -> tuple[str, str, str]:
    """(scheme prefix, host, port) of an engine URL such as http://h:p or h:p."""
    target = target_of(url)
    prefix = url[: len(url) - len(target)] if url.endswith(target) else ""
    parts = urlsplit(f"//{target}")
    host = parts.hostname or ""
    port = str(parts.port) if parts.port is not None else ""
    return prefix, host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve_engines(urls: Sequence[str]) -> list[str]:
    """Expand every URL whose host name resolves to several addresses into one per address.

    IPv4 addresses are preferred when a name has both families (a local
    engine bound to 127.0.0.1 must not also appear as ::1); `localhost`, IP
    literals and names that fail to resolve are kept as given (the call will
    say why it fails).
    """
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for url in urls:
        prefix, host, port = _split_host_port(url)
        if not host or not port or _is_ip(host) or host == "localhost":
            out.append(url)
            continue
        try:
            infos = await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError:
            out.append(url)
            continue
        v4 = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET})
        v6 = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET6})
        addresses = v4 or v6
        if len(addresses) <= 1:
            out.append(url)
            continue
        for address in addresses:
            shown = f"[{address}]" if ":" in address else address
            out.append(f"{prefix}{shown}:{port}")
    # The same engine listed twice would get twice the window: keep one.
    return list(dict.fromkeys(out))


@dataclass
class ChunkTask:
    """One chunk to run: its work item and what the pool learned about it."""

    work: ChunkWork
    # Engine failures this chunk has been part of (persisted attempts + this run's).
    attempts: int = 0


@dataclass
class ChunkOutcome:
    """How one chunk's call ended."""

    work_id: str
    engine: str
    files: int = 0
    failed: int = 0
    bytes: int = 0
    parts: list[BatchEvent] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    totals: ProgressEvent | None = None
    # Set when the chunk as a whole could not be done (bad chunk, poison).
    error: FileErrorInfo | None = None
    error_message: str | None = None


# Called with (work_id, engine url, latest cumulative progress of that chunk).
ProgressSink = Callable[[str, str, ProgressEvent], None]
# Called once per chunk that finished (done or failed), before the next is taken.
OutcomeSink = Callable[[ChunkOutcome], Awaitable[None]]
# Called when a chunk goes back to the queue after its engine failed.
RequeueSink = Callable[[str, str, str], Awaitable[None]]


@dataclass
class ProcessSpec:
    """What every chunk call of a run shares."""

    task: str
    options: dict[str, Any] | None
    results_dir: str
    destination: str
    job_id: str
    progress_interval_ms: int
    # Server-side encryption (mode, KMS key id) of objects written to an
    # s3:// destination; None: the engine's default.
    encryption: tuple[str, str] | None = None


async def _window_of(
    client: EngineClient, configured: int, known: Capabilities | None = None
) -> int:
    if configured > 0:
        return configured
    caps = known if known is not None else await client.capabilities(deadline=5.0)
    threads = caps.worker_threads or 0
    if threads <= 0:
        return _DEFAULT_WINDOW
    # One chunk keeps about one batch per thread busy; a second one in flight
    # hides the gap between two chunks.
    return max(_DEFAULT_WINDOW, min(_MAX_WINDOW, threads // 4 + 1))


async def run_chunks(
    engine_urls: Sequence[str],
    chunks: Sequence[ChunkTask] | AsyncIterable[ChunkTask],
    spec: ProcessSpec,
    *,
    on_progress: ProgressSink,
    on_outcome: OutcomeSink,
    on_requeue: RequeueSink | None = None,
    window: int = 0,
    chunk_max_attempts: int = 3,
    connect: Callable[[str], EngineClient] = EngineClient,
    capabilities: Mapping[str, Capabilities] | None = None,
) -> None:
    """Run every chunk on the engines; see the module docstring.

    `connect` makes the client of one engine URL (the settings' TLS, say).
    `capabilities` holds what the caller already asked of some engines (by
    URL), so they are not asked again for their window.

    `chunks` may also be an async iterable that yields chunks while they are
    being listed: each is queued as it comes, and the run ends once the
    iterable is exhausted and every chunk it gave is settled. If iterating
    raises, the run stops and raises that error.
    """
    queue: asyncio.Queue[ChunkTask] = asyncio.Queue()
    # Chunks neither done nor failed; when it reaches 0 (and no more can
    # come) every feeder stops.
    remaining = 0
    all_done = asyncio.Event()
    streamed: asyncio.Task[None] | None = None
    if isinstance(chunks, Sequence):
        if not chunks:
            return
        for chunk in chunks:
            queue.put_nowait(chunk)
        remaining = len(chunks)
        all_queued = True
    else:
        all_queued = False
        source = chunks

        async def take() -> None:
            nonlocal remaining, all_queued
            async for chunk in source:
                remaining += 1
                queue.put_nowait(chunk)
            all_queued = True
            check_first_round()
            if remaining == 0:
                all_done.set()

        streamed = asyncio.create_task(take(), name=f"chunks-of-{spec.job_id}")
    live = set(engine_urls)
    fatal: list[BaseException] = []
    down_reasons: dict[str, str] = {}
    # Every engine gets a chunk before any engine gets a second in flight,
    # so a job of a few chunks is spread instead of filling one window.
    first_round = asyncio.Event()
    started: set[str] = set()

    def check_first_round() -> None:
        # While a listing is still going, an empty queue only means the next
        # chunk is not written yet.
        if live <= started or (queue.empty() and all_queued):
            first_round.set()

    async def settle(outcome: ChunkOutcome) -> None:
        nonlocal remaining
        await on_outcome(outcome)
        remaining -= 1
        if remaining == 0 and all_queued:
            all_done.set()

    async def run_one(client: EngineClient, url: str, chunk: ChunkTask) -> None:
        outcome = ChunkOutcome(work_id=chunk.work.id, engine=url)
        async for event in client.process(
            spec.task,
            [chunk.work],
            options=spec.options,
            results_dir=spec.results_dir,
            destination=spec.destination,
            job_id=spec.job_id,
            progress_interval_ms=spec.progress_interval_ms,
            encryption=spec.encryption,
        ):
            if isinstance(event, ProgressEvent):
                on_progress(chunk.work.id, url, event)
            elif isinstance(event, BatchEvent):
                if event.part_uri:
                    outcome.parts.append(event)
            elif isinstance(event, ItemDoneEvent):
                outcome.files, outcome.failed, outcome.bytes = (
                    event.files,
                    event.failed,
                    event.bytes,
                )
                outcome.error = event.error
            elif isinstance(event, SummaryEvent):
                outcome.summary = event.summary
                outcome.totals = event.totals
                on_progress(chunk.work.id, url, event.totals)
        if outcome.totals is None and outcome.error is None:
            raise EngineError(f"engine at {url} ended chunk {chunk.work.id} without a summary")
        await settle(outcome)

    async def feeder(url: str) -> None:
        async with connect(url) as client:
            try:
                size = await _window_of(client, window, (capabilities or {}).get(url))
            except (EngineUnavailableError, EngineError) as exc:
                mark_down(url, str(exc))
                return
            slots = asyncio.Semaphore(size)
            calls: set[asyncio.Task[None]] = set()
            failure: list[BaseException] = []

            async def guarded(chunk: ChunkTask) -> None:
                try:
                    await run_one(client, url, chunk)
                except (InvalidRequestError, NotFoundError) as exc:
                    fatal.append(exc)
                    all_done.set()
                except (EngineUnavailableError, EngineError) as exc:
                    failure.append(exc)
                    await give_back(chunk, url, str(exc))
                except Exception as exc:  # e.g. the checkpoint could not be stored
                    fatal.append(exc)
                    all_done.set()
                finally:
                    slots.release()

            try:
                while url in live and not all_done.is_set() and not failure:
                    await slots.acquire()
                    if not first_round.is_set() and any(not c.done() for c in calls):
                        await _either(first_round, all_done)
                    chunk = None if failure else await _next(queue, all_done)
                    if chunk is not None and failure:
                        queue.put_nowait(chunk)  # our engine just failed: leave it to others
                        chunk = None
                    if chunk is None:
                        slots.release()
                        break
                    calls.add(asyncio.create_task(guarded(chunk)))
                    started.add(url)
                    check_first_round()
                    calls = {c for c in calls if not c.done()}
                if failure:
                    mark_down(url, str(failure[0]))
                    # Our other calls fail by themselves (or finish): let them,
                    # so none is cut short while it records its checkpoint.
                    await asyncio.gather(*calls, return_exceptions=True)
            finally:
                for call in calls:
                    call.cancel()
                await asyncio.gather(*calls, return_exceptions=True)

    async def give_back(chunk: ChunkTask, url: str, reason: str) -> None:
        chunk.attempts += 1
        if chunk.attempts >= chunk_max_attempts:
            await settle(
                ChunkOutcome(
                    work_id=chunk.work.id,
                    engine=url,
                    error_message=(
                        f"chunk {chunk.work.id} failed on {chunk.attempts} engine calls; "
                        f"last: {reason}"
                    ),
                )
            )
            return
        log.warning("engine failed; chunk moved to the others", engine=url, work_id=chunk.work.id)
        queue.put_nowait(chunk)  # first: whatever happens next, the chunk is not lost
        if on_requeue is not None:
            await on_requeue(chunk.work.id, url, reason)

    def mark_down(url: str, reason: str) -> None:
        if url in live:
            live.discard(url)
            down_reasons[url] = reason
            check_first_round()
            log.warning("engine marked down for this job", engine=url, reason=reason)

    feeders = [asyncio.create_task(feeder(url), name=f"feeder-{url}") for url in engine_urls]
    stopper = asyncio.ensure_future(all_done.wait())
    try:
        # Feeders run until every chunk is settled (all_done) or their engine
        # is down; when all of them ended first, no engine is left. A failed
        # listing (the streamed chunks' source) ends the run with its error.
        pending: set[asyncio.Future[Any]] = set(feeders)
        if streamed is not None:
            pending.add(streamed)
        while (pending - {streamed}) and not all_done.is_set():
            done, pending = await asyncio.wait(
                pending | {stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stopper)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        if fatal:
            raise fatal[0]
        if not all_done.is_set():  # chunks left (or still to come), no engine left
            reasons = "; ".join(f"{u}: {r}" for u, r in down_reasons.items())
            raise EngineUnavailableError(
                f"no engine left to run {remaining} chunk(s) of job {spec.job_id} ({reasons})"
            )
    finally:
        stopper.cancel()
        others = [*feeders, *([streamed] if streamed is not None else [])]
        for task in others:
            task.cancel()
        await asyncio.gather(stopper, *others, return_exceptions=True)


async def _either(*events: asyncio.Event) -> None:
    """Wait until one of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _next(queue: asyncio.Queue[ChunkTask], done: asyncio.Event) -> ChunkTask | None:
    """The next chunk; waits while the queue is empty (a chunk may come back from a
    failed engine); None once every chunk is settled."""
    with contextlib.suppress(asyncio.QueueEmpty):
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    waiter = asyncio.ensure_future(done.wait())
    try:
        finished, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not getter.done():
            getter.cancel()
    if getter in finished and not getter.cancelled():
        return getter.result()
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    if getter.done() and not getter.cancelled():
        # Got a chunk at the same moment the run ended: put it back.
        queue.put_nowait(getter.result())
    return None
