"""The job worker: claims queued jobs and runs them on engines.

Why this shape (procrastinate's worker is the model):

- a semaphore bounds how many jobs run at once (`worker_concurrency`); the
  loop only claims a job when it holds a free slot, so a claimed job never
  waits in memory while its lease ticks;
- between claims the loop waits for whichever comes first: the stop event,
  a wake-up - in-process (`notify()`, called by the API after an enqueue) or,
  on PostgreSQL, a `NOTIFY pravah_jobs` from any instance (LISTEN on a
  dedicated connection) - or the poll interval;
- a heartbeat task renews the leases of this worker's running jobs,
  recovers jobs whose worker died (stale lease -> pending, or failed once
  out of attempts), and fires due schedules (pravah.schedules: each tick is
  claimed in the database, so it fires once across all instances);
- a sweeper task removes, hourly, the workspaces of jobs past
  PRAVAH_RESULTS_RETENTION (pravah.retention);
- on stop, running jobs get `shutdown_timeout` seconds to finish; then they
  are cancelled, which cancels their engine calls and puts them back to
  `pending` for another worker.

Every job uses every engine: its chunks are spread over all of them
(pravah.engine_pool), and an engine that dies has its chunks moved to the
others. A job whose attempt fails for a reason that may pass (no engine
left, database away) goes back to the queue with an exponential backoff
(`run_after`) until its attempts are used up; permanent errors (bad input)
fail it at once (pravah.runner). Every claim is recorded in `job_claims`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from pravah import queue, retention, schedules, uploads
from pravah.db import Database
from pravah.log import get_logger
from pravah.models import utcnow
from pravah.runner import ProgressCallback, run_job
from pravah.settings import Settings

log = get_logger(__name__)

# Seconds between two sweeps for expired results (pravah.retention).
PRUNE_INTERVAL = 3600.0
# Seconds a housekeeping step (heartbeat, sweep batch) may take to finish at
# shutdown before it is cancelled.
HOUSEKEEPING_GRACE = 10.0


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class Worker:
    """Runs queued jobs until `stop` is set; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        engine_urls: Sequence[str],
        *,
        db: Database | None = None,
        worker_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if not engine_urls:
            raise ValueError("a Worker needs at least one engine URL")
        self.settings = settings
        self.engine_urls = list(engine_urls)
        self._db = db
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_progress = on_progress
        # Set by notify() to cut the poll wait short after an in-process enqueue.
        self._wake = asyncio.Event()
        # Jobs in flight; each holds one semaphore slot until it ends.
        self._running: set[asyncio.Task[None]] = set()
        # Their ids: the heartbeat renews exactly these leases, so a job this
        # process no longer runs (whatever went wrong) is never kept alive.
        self._job_ids: set[str] = set()
        self.log = log.bind(worker_id=self.worker_id)

    def notify(self) -> None:
        """Wake the loop now (a job was just enqueued in this process)."""
        self._wake.set()

    @property
    def running_jobs(self) -> int:
        """How many jobs this worker runs right now."""
        return len(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until `stop` is set; then stop gracefully."""
        own_db = self._db is None
        db = self._db if self._db is not None else Database(self.settings)
        slots = asyncio.Semaphore(self.settings.worker_concurrency)
        # Connected before the loops start, so a run cancelled while it
        # connects leaves no loop behind.
        listener = await self._listen(db)
        heartbeat = asyncio.create_task(self._heartbeat(db, stop), name="worker-heartbeat")
        sweeper = asyncio.create_task(self._sweep(db, stop), name="worker-results-sweep")
        self.log.info(
            "worker started",
            concurrency=self.settings.worker_concurrency,
            engines=self.engine_urls,
        )
        try:
            while not stop.is_set():
                if not await self._acquire(slots, stop):
                    break
                try:
                    async with db.session() as session:
                        job_id = await queue.claim_job(session, self.worker_id)
                except Exception as exc:
                    slots.release()
                    self.log.warning("could not claim a job", error=str(exc))
                    await _wait_any(stop, self._wake, self.settings.poll_interval)
                    continue
                if job_id is None:
                    slots.release()
                    self._wake.clear()
                    await _wait_any(stop, self._wake, self.settings.poll_interval)
                    continue
                task = asyncio.create_task(self._run_one(db, job_id, slots), name=f"job-{job_id}")
                self._running.add(task)
                self._job_ids.add(job_id)
                task.add_done_callback(self._running.discard)
        finally:
            try:
                await self._shutdown()
            finally:
                # Even when the shutdown itself is cancelled: the LISTEN
                # connection is outside the pool, and left open it was
                # closed only by the garbage collector.
                try:
                    if listener is not None:
                        await _close_listener(listener)
                finally:
                    await _wind_down((heartbeat, sweeper), stop)
            if own_db:
                await db.dispose()
            self.log.info("worker stopped")

    async def _listen(self, db: Database) -> Any:
        """On PostgreSQL, LISTEN for enqueues so new jobs start without a poll delay.

        A dedicated asyncpg connection (outside the pool: a listening
        connection must stay open). Failure only means falling back to polling.
        """
        if not db.is_postgres:
            return None
        url = db.engine.url.set(drivername="postgresql")
        try:
            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
            await conn.add_listener(queue.CHANNEL, self._on_notify)
        except Exception as exc:
            self.log.warning("LISTEN unavailable; polling only", error=str(exc))
            return None
        return conn

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _acquire(self, slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
        """Take a slot, or return False if stop is set first."""
        if not slots.locked():
            await slots.acquire()
            return True
        acquire = asyncio.create_task(slots.acquire())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if acquire.done() and not acquire.cancelled():
            if stop.is_set():
                slots.release()
                return False
            return True
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        return False

    async def _run_one(self, db: Database, job_id: str, slots: asyncio.Semaphore) -> None:
        try:
            await run_job(
                job_id,
                self.settings,
                self.engine_urls,
                self.on_progress,
                db=db,
                worker_id=self.worker_id,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("job run failed outside the runner", job_id=job_id)
            await self._give_back(db, job_id)
        finally:
            self._job_ids.discard(job_id)
            slots.release()

    async def _give_back(self, db: Database, job_id: str) -> None:
        """Put a job whose run broke (database away at its end) back to pending.

        If even that fails, the lease does it: the heartbeat no longer renews
        the job, so any instance requeues it once the lease expires.
        """
        with contextlib.suppress(Exception):
            async with db.session() as session:
                await queue.give_back(session, job_id, self.worker_id)

    async def _shutdown(self) -> None:
        if not self._running:
            return
        running = set(self._running)
        self.log.info("waiting for running jobs", jobs=len(running))
        _, pending = await asyncio.wait(running, timeout=self.settings.shutdown_timeout)
        for task in pending:
            task.cancel()  # the runner requeues the job
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat(self, db: Database, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_interval)
            if stop.is_set():
                return
            try:
                async with db.session() as session:
                    await queue.heartbeat(session, self.worker_id, sorted(self._job_ids))
                    requeued, failed = await queue.recover_stale(
                        session, self.settings.lease_timeout, self.settings.max_attempts
                    )
                if requeued or failed:
                    self.log.warning("recovered stale jobs", requeued=requeued, failed=failed)
                    self.notify()
                async with db.session() as session:
                    fired = await schedules.fire_due(session, settings=self.settings)
                if fired:
                    self.log.info("schedules fired", jobs=fired)
                    self.notify()
            except Exception as exc:
                self.log.warning("heartbeat failed", error=str(exc))

    async def _sweep(self, db: Database, stop: asyncio.Event) -> None:
        """Expires old results and removes abandoned uploads at start, then
        every PRUNE_INTERVAL (at once again while a sweep still finds a full
        batch of results). A task of its own:
        removing folders must never delay a heartbeat, whose leases expire."""
        while not stop.is_set():
            expired = 0
            try:
                async with db.session() as session:
                    expired = await retention.prune_results(session, self.settings, utcnow())
            except Exception as exc:
                self.log.warning("could not remove expired job results", error=str(exc))
            try:
                gone = await asyncio.to_thread(
                    uploads.remove_abandoned, self.settings.uploads_dir, utcnow()
                )
                if gone:
                    self.log.info("removed abandoned upload folders", folders=gone)
            except OSError as exc:
                self.log.warning("could not remove abandoned uploads", error=str(exc))
            wait = 0.0 if expired >= retention.BATCH else PRUNE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def _wind_down(tasks: tuple[asyncio.Task[None], ...], stop: asyncio.Event) -> None:
    """Ends the housekeeping loops. Once `stop` is set each ends by itself
    after the step it is in, and gets HOUSEKEEPING_GRACE seconds to. Cancelled
    inside a query, a loop made asyncpg open a second connection to cancel
    it on the server, in a task of its own that could outlive the event loop
    and leave that socket to the garbage collector (the sweep queries as soon
    as the worker starts, so a worker stopped at once met it there). Without
    `stop` (the worker's own run was cancelled or failed) they are cancelled
    at once."""
    try:
        if stop.is_set():
            await asyncio.wait(tasks, timeout=HOUSEKEEPING_GRACE)
    finally:
        for task in tasks:
            task.cancel()  # a no-op on a task that ended
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close_listener(conn: Any) -> None:
    """Closes the LISTEN connection; at once (no goodbye to the server) when
    the close fails or is itself cancelled."""
    try:
        await conn.close(timeout=2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()
