"""The anchor of the queue benchmark: procrastinate doing no-op tasks.

Why procrastinate: it is the PostgreSQL queue Pravah's own queue is modelled
on (claim in one statement with `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` to
wake workers), so its worker on the same server bounds what the queue part
of a job can cost. Installed by `make bench-deps` from bench/requirements.txt,
never a dependency of Pravah itself.

    python bench/procrastinate_app.py DATABASE_URL [--concurrency 4]

runs one worker until SIGINT (bench/queue_throughput.py starts 1 or 3).
"""

from __future__ import annotations

import argparse
import asyncio

import procrastinate  # type: ignore[import-not-found, unused-ignore]

QUEUE = "bench"


def make_app(database_url: str) -> procrastinate.App:
    """An app on `database_url` with the one no-op task, named `noop`."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_url))

    @app.task(name="noop", queue=QUEUE)
    async def noop() -> None:
        return None

    return app


async def _work(database_url: str, concurrency: int) -> None:
    app = make_app(database_url)
    async with app.open_async():
        # listen_notify (the default) wakes the worker at once, as Pravah's does.
        await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(_work(args.database_url, args.concurrency))


if __name__ == "__main__":
    main()
