"""Queue throughput: empty jobs through REST + queue + engine, with 1 and 3
control-plane instances on one PostgreSQL, and the time from `POST /jobs` to
`running` (p50, p99).

Usage: `.venv/bin/python bench/queue_throughput.py [--jobs 300] [--instances 1 3]`
(PostgreSQL from PRAVAH_TEST_PG_* like the tests; one engine per run, the
release build when present). Prints one line per instance count; no
assertions. Each run uses a fresh database, dropped afterwards.
"""

# The processes are started once per run, outside the timed part.
# ruff: noqa: ASYNC220, ASYNC221

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

REPO = Path(__file__).resolve().parents[1]
PG = (
    os.environ.get("PRAVAH_TEST_PG_HOST", "127.0.0.1"),
    int(os.environ.get("PRAVAH_TEST_PG_PORT", "5432")),
    os.environ.get("PRAVAH_TEST_PG_USER", "postgres"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG[0], port=PG[1], user=PG[2], database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _engine_bin() -> Path:
    for profile in ("release", "debug"):
        path = REPO / "target" / profile / "pravah-engine"
        if path.is_file():
            return path
    sys.exit("build the engine first: make engine-release")


async def run(instances: int, jobs: int) -> str:
    name = f"pravah_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{PG[2]}@{PG[0]}:{PG[1]}/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="pravah-bench-"))
    source = tmp / "empty"
    source.mkdir()
    engine = subprocess.Popen(
        [str(_engine_bin()), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert engine.stdout is not None
    engine_addr = engine.stdout.readline().split("listening on ")[-1].strip()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PRAVAH_STATE_DIR": str(tmp / "state"),
        "PRAVAH_ENGINE_URLS": engine_addr,
        "PRAVAH_WORKER_CONCURRENCY": "4",
        "LOG_LEVEL": "WARNING",
    }
    pravah = Path(sys.executable).parent / "pravah"
    subprocess.run([str(pravah), "migrate"], env=env, check=True, capture_output=True)
    ports = [_free_port() for _ in range(instances)]
    servers = [
        subprocess.Popen(
            [str(pravah), "serve", "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for p in ports:
                for _ in range(300):
                    try:
                        if (await client.get(f"http://127.0.0.1:{p}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            body = {"source": str(source), "task": "csv-header"}
            started = time.perf_counter()
            ids = await asyncio.gather(
                *(
                    client.post(f"http://127.0.0.1:{ports[i % instances]}/jobs", json=body)
                    for i in range(jobs)
                )
            )
            job_ids = [r.json()["id"] for r in ids]
            conn = await asyncpg.connect(url)
            try:
                while True:
                    left = await conn.fetchval(
                        "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
                    )
                    if left == 0:
                        break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                rows = await conn.fetch(
                    "SELECT extract(epoch FROM started_at - created_at) AS wait FROM jobs"
                )
            finally:
                await conn.close()
        waits = sorted(float(r["wait"]) * 1000 for r in rows)
        p50 = statistics.median(waits)
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        return (
            f"{instances} instance(s): {len(job_ids)} empty jobs in {elapsed:.2f} s = "
            f"{len(job_ids) / elapsed:.0f} jobs/s; POST->running p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        for server in servers:
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        engine.terminate()
        engine.wait(10)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    for n in args.instances:
        print(asyncio.run(run(n, args.jobs)), flush=True)


if __name__ == "__main__":
    main()
