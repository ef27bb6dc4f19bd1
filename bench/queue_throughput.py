"""Queue throughput: empty jobs through REST + queue + engine with 1 and 3
control-plane instances on one PostgreSQL, and the time from `POST /jobs` to
`running` (p50, p99), next to procrastinate's worker doing no-op tasks on the
same server, as the anchor.

How it is fair: both sides get a fresh database, the same number of worker
processes (1 or 3), the same concurrency per process (4), LISTEN/NOTIFY
wake-ups, and the jobs are all submitted at once, concurrently, while the
workers are already up; a run ends when no job is left to do. Pravah's jobs
do more than the anchor's: an HTTP request each, validation, a listing by an
engine over gRPC and the result bookkeeping, so the anchor is a ceiling for
the queue part, not a like-for-like race. The wait is each job's own
`started_at - created_at` (procrastinate: its `started` event minus its
`deferred` event). Under the burst that wait is mostly time spent queued
behind other jobs; the `idle wait` column is the same wait for jobs sent one
at a time to idle workers (each after the previous one finished), which is
how fast LISTEN/NOTIFY starts a job. Nothing asserts a time: it reports.

    python bench/queue_throughput.py [--jobs 200] [--instances 1 3]

`make bench` runs it (procrastinate from `make bench-deps`); without
procrastinate installed its rows are skipped with a message.
"""

# Processes are started outside the timed part, and the end of a run is seen
# by polling the database, which is what is measured.
# ruff: noqa: ASYNC110, ASYNC220

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import services  # noqa: E402
from bench.report import save_rows  # noqa: E402


@dataclass
class Row:
    queue: str
    processes: int
    jobs: int
    seconds: float
    jobs_per_s: float
    wait_p50_ms: float
    wait_p99_ms: float
    idle_wait_p50_ms: float
    ratio_vs_anchor: float | None = None


IDLE_JOBS = 20
PRAVAH_LEFT = "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
PRAVAH_WAIT = (
    "SELECT extract(epoch FROM started_at - created_at) AS w FROM jobs WHERE id = ANY($1::text[])"
)
PROCRASTINATE_LEFT = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
PROCRASTINATE_WAIT = (
    "SELECT extract(epoch FROM s.at - d.at) AS w FROM procrastinate_events d "
    "JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started' "
    "WHERE d.type = 'deferred' AND d.job_id = ANY($1::bigint[])"
)


async def _waits_ms(conn: asyncpg.Connection, sql: str, ids: list[Any]) -> list[float]:
    return sorted(float(r["w"]) * 1000 for r in await conn.fetch(sql, ids))


def _row(queue: str, processes: int, seconds: float, burst: list[float], idle: list[float]) -> Row:
    return Row(
        queue=queue,
        processes=processes,
        jobs=len(burst),
        seconds=round(seconds, 3),
        jobs_per_s=round(len(burst) / seconds, 1),
        wait_p50_ms=round(statistics.median(burst), 1),
        wait_p99_ms=round(burst[min(len(burst) - 1, int(len(burst) * 0.99))], 1),
        idle_wait_p50_ms=round(statistics.median(idle), 1),
    )


async def _wait_until_zero(conn: asyncpg.Connection, sql: str) -> None:
    while await conn.fetchval(sql):
        await asyncio.sleep(0.02)


async def pravah(instances: int, jobs: int) -> Row:
    """`jobs` empty csv-header jobs POSTed at once, spread over `instances` servers."""
    with tempfile.TemporaryDirectory(prefix="pravah-bench-") as tmp_text:
        tmp = Path(tmp_text)
        (tmp / "empty").mkdir()
        body = {"source": str(tmp / "empty"), "task": "csv-header"}
        async with services.fresh_database() as url:
            with services.engines(1) as engine_urls:
                env = services.server_env(url, tmp / "state", engine_urls)
                async with services.servers(instances, env) as bases:
                    limits = httpx.Limits(max_connections=jobs)
                    async with httpx.AsyncClient(
                        timeout=60, limits=limits, headers=services.AUTH
                    ) as client:
                        conn = await asyncpg.connect(url)
                        try:
                            started = time.perf_counter()
                            answers = await asyncio.gather(
                                *(
                                    client.post(f"{bases[i % instances]}/jobs", json=body)
                                    for i in range(jobs)
                                )
                            )
                            bad = [a.text for a in answers if a.status_code != 202]
                            if bad:
                                raise RuntimeError(f"POST /jobs failed: {bad[0]}")
                            await _wait_until_zero(conn, PRAVAH_LEFT)
                            elapsed = time.perf_counter() - started
                            failed = await conn.fetchval(
                                "SELECT count(*) FROM jobs WHERE status <> 'completed'"
                            )
                            if failed:
                                raise RuntimeError(f"{failed} benchmark jobs did not complete")
                            burst = [a.json()["id"] for a in answers]
                            idle = []
                            for i in range(IDLE_JOBS):
                                one = await client.post(f"{bases[i % instances]}/jobs", json=body)
                                idle.append(one.json()["id"])
                                await _wait_until_zero(conn, PRAVAH_LEFT)
                            waits = await _waits_ms(conn, PRAVAH_WAIT, burst)
                            idle_waits = await _waits_ms(conn, PRAVAH_WAIT, idle)
                        finally:
                            await conn.close()
    return _row("pravah (empty job)", instances, elapsed, waits, idle_waits)


async def procrastinate(workers: int, jobs: int) -> Row:
    """`jobs` no-op tasks deferred at once while `workers` worker processes run."""
    from bench.procrastinate_app import make_app

    async with services.fresh_database() as url:
        app = make_app(url)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            script = str(ROOT / "bench" / "procrastinate_app.py")
            procs = [
                subprocess.Popen(
                    [sys.executable, script, url, "--concurrency", "4"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for _ in range(workers)
            ]
            conn = await asyncpg.connect(url)
            try:
                for _ in range(600):  # each worker registers itself when it starts
                    if await conn.fetchval("SELECT count(*) FROM procrastinate_workers") >= workers:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("procrastinate workers did not start in 60 s")
                noop = app.tasks["noop"]
                started = time.perf_counter()
                burst = await asyncio.gather(*(noop.defer_async() for _ in range(jobs)))
                await _wait_until_zero(conn, PROCRASTINATE_LEFT)
                elapsed = time.perf_counter() - started
                idle = []
                for _ in range(IDLE_JOBS):
                    idle.append(await noop.defer_async())
                    await _wait_until_zero(conn, PROCRASTINATE_LEFT)
                waits = await _waits_ms(conn, PROCRASTINATE_WAIT, list(burst))
                idle_waits = await _waits_ms(conn, PROCRASTINATE_WAIT, idle)
            finally:
                await conn.close()
                services.stop(procs)
    return _row("procrastinate (no-op)", workers, elapsed, waits, idle_waits)


def have_procrastinate() -> bool:
    try:
        import procrastinate  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(rows: list[Row]) -> None:
    cols = ("queue", "procs", "jobs", "seconds", "jobs/s", "ratio", "wait p50", "wait p99")
    header = "{:<24} {:>5} {:>6} {:>8} {:>8} {:>7} {:>10} {:>10} {:>10}".format(*cols, "idle wait")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "anchor" if r.ratio_vs_anchor is None else f"{r.ratio_vs_anchor:.2f}x"
        print(
            f"{r.queue:<24} {r.processes:>5} {r.jobs:>6} {r.seconds:>8.2f} {r.jobs_per_s:>8.1f} "
            f"{ratio:>7} {r.wait_p50_ms:>8.0f}ms {r.wait_p99_ms:>8.0f}ms "
            f"{r.idle_wait_p50_ms:>8.0f}ms"
        )


async def run(instances: list[int], jobs: int) -> list[Row]:
    rows: list[Row] = []
    anchor_ok = have_procrastinate()
    if not anchor_ok:
        print("procrastinate not installed (make bench-deps): its rows are skipped")
    for n in instances:
        anchor = await procrastinate(n, jobs) if anchor_ok else None
        ours = await pravah(n, jobs)
        if anchor is not None:
            ours.ratio_vs_anchor = round(ours.jobs_per_s / anchor.jobs_per_s, 3)
            rows.append(anchor)
        rows.append(ours)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run (default 200)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    rows = asyncio.run(run(args.instances, args.jobs))
    print()
    print_table(rows)
    save_rows("queue", rows)


if __name__ == "__main__":
    main()
