"""Commands that run one role of a scaled deployment: `worker` and `migrate`.

Why separate commands: in Kubernetes or docker compose each role is its own
process - API instances (`pravah serve` with PRAVAH_RUN_WORKER=false), job
workers (`pravah worker`), engines (`pravah-engine`) and a one-off schema
migration (`pravah migrate`, the migration Job) - all from the same image.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from pravah.cli.common import err_console, handle_errors, load_settings

if TYPE_CHECKING:
    from pravah.settings import Settings

__all__ = ["migrate_command", "worker_command"]


def worker_command(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            help="Jobs run at once (default: PRAVAH_WORKER_CONCURRENCY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the job worker without the API (engines from PRAVAH_ENGINE_URLS, or a local one).

    The database schema must exist: run `pravah migrate` (or `pravah serve`) first.
    SIGTERM or SIGINT stops it gracefully: running jobs get PRAVAH_SHUTDOWN_TIMEOUT
    seconds to finish, then go back to the queue for another worker.
    """
    with handle_errors():
        settings = load_settings()
        if concurrency is not None:
            settings = settings.model_copy(update={"worker_concurrency": concurrency})
        from pravah.log import configure_logging

        configure_logging(settings.log_level)
        asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    from pravah.engine_launcher import LocalEngine
    from pravah.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A stop signal is the normal end of a worker: set the event, let run()
    # drain or requeue its jobs, and exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        urls = list(settings.engine_urls)
        if not urls:
            urls = [await stack.enter_async_context(LocalEngine.from_settings(settings))]
        await Worker(settings, urls).run(stop)


def migrate_command() -> None:
    """Create or upgrade the job store's schema to the latest revision, then exit."""
    with handle_errors():
        settings = load_settings()
        from pravah.db import migrate
        from pravah.log import configure_logging

        configure_logging(settings.log_level)
        asyncio.run(migrate(settings))
        err_console.print("database schema is up to date")
