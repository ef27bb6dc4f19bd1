"""The processes a service benchmark needs: a fresh PostgreSQL database,
engines and `pravah serve` instances, started outside the timed part.

Why a module: the queue benchmark (bench/queue_throughput.py) and the
scaling benchmark (bench/scaling.py) start the same things the same way,
and each must stop them (SIGINT, then kill) and drop its database even when
a run fails halfway. PostgreSQL comes from PRAVAH_TEST_PG_* like the tests.
"""

# The processes are started once per run, outside the timed part.
# ruff: noqa: ASYNC220, ASYNC221

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

REPO = Path(__file__).resolve().parents[1]
PG = (
    os.environ.get("PRAVAH_TEST_PG_HOST", "127.0.0.1"),
    int(os.environ.get("PRAVAH_TEST_PG_PORT", "5432")),
    os.environ.get("PRAVAH_TEST_PG_USER", "postgres"),
)
# The servers run with authentication on, as deployed; the bootstrap admin
# key is compared in memory, so it adds no database work per request.
ADMIN_KEY = "pvh-bench-admin-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PRAVAH = Path(sys.executable).parent / "pravah"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_bin() -> Path:
    """PRAVAH_ENGINE_BIN, else the release build, else the debug build."""
    configured = os.environ.get("PRAVAH_ENGINE_BIN")
    if configured:
        return Path(configured)
    for profile in ("release", "debug"):
        path = REPO / "target" / profile / "pravah-engine"
        if path.is_file():
            return path
    sys.exit("build the engine first: make engine-release")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG[0], port=PG[1], user=PG[2], database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    name = f"pravah_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG[2]}@{PG[0]}:{PG[1]}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stop(processes: list[subprocess.Popen[str]], timeout: float = 20.0) -> None:
    """SIGINT to each process, then kill whichever is still running after `timeout`."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def engines(count: int) -> Iterator[list[str]]:
    """`count` engines on free ports; yields their addresses."""
    started: list[subprocess.Popen[str]] = []
    addresses: list[str] = []
    try:
        for _ in range(count):
            engine = subprocess.Popen(
                [str(engine_bin()), "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            started.append(engine)
            assert engine.stdout is not None
            addresses.append(engine.stdout.readline().split("listening on ")[-1].strip())
        yield addresses
    finally:
        stop(started, timeout=10)


def server_env(database_url: str, state_dir: Path, engine_urls: list[str]) -> dict[str, str]:
    """The environment of a `pravah serve` instance of a benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRAVAH_")}
    env.update(
        DATABASE_URL=database_url,
        PRAVAH_STATE_DIR=str(state_dir),
        PRAVAH_ENGINE_URLS=",".join(engine_urls),
        PRAVAH_ADMIN_KEY=ADMIN_KEY,
        PRAVAH_WORKER_CONCURRENCY="4",
        LOG_LEVEL="WARNING",
    )
    return env


@asynccontextmanager
async def servers(count: int, env: dict[str, str]) -> AsyncIterator[list[str]]:
    """`count` `pravah serve` instances sharing `env`'s database; yields their base URLs."""
    subprocess.run([str(PRAVAH), "migrate"], env=env, check=True, capture_output=True)
    ports = [free_port() for _ in range(count)]
    started = [
        subprocess.Popen(
            [str(PRAVAH), "serve", "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for p in ports
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for url, process in zip(urls, started, strict=True):
                for _ in range(600):
                    if process.poll() is not None:
                        raise RuntimeError(f"pravah serve exited with {process.returncode}")
                    try:
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"pravah serve at {url} not ready in 60 s")
        yield urls
    finally:
        stop(started)
