"""Fixtures for end-to-end tests: the `pravah` CLI and server as real subprocesses.

Why subprocesses: exit codes, stdout/stderr separation, signal handling and
the engine child's lifetime are exactly what these tests check, and none of
them can be seen from an in-process call. Each test gets its own state
folder (SQLite job store, workspaces) and a clean environment: only
PRAVAH_ENGINE_BIN (from the shared `engine_bin` fixture) and PRAVAH_STATE_DIR
are set, so a developer's own configuration never leaks in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_harness import Cli, Server, clean_env, free_port, make_cli_tree, make_large_tree


@pytest.fixture
def cli(tmp_path: Path, engine_bin: Path) -> Cli:
    state = tmp_path / "state"
    work = tmp_path / "cwd"  # no stray .env is picked up from the repo
    work.mkdir()
    env = clean_env()
    env.update(
        PRAVAH_ENGINE_BIN=str(engine_bin),
        PRAVAH_STATE_DIR=str(state),
        COLUMNS="200",
    )
    return Cli(env=env, cwd=work, state_dir=state)


# Expected outcome per file of the tree below: columns, or the error kind.
@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    """The CLI tests' small CSV tree (see cli_harness.TREE_RESULTS)."""
    return make_cli_tree(tmp_path / "data")


@pytest.fixture(scope="session")
def large_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30,000 small CSV files in 100 folders: long enough to interrupt."""
    return make_large_tree(tmp_path_factory.mktemp("large"))


def _start_server(cli: Cli, log: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    process = cli.popen("serve", "--port", str(port), log=log, extra_env=extra_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            code = process.returncode
            raise AssertionError(f"pravah serve exited with {code}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return Server(url=url, process=process, log=log)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"pravah serve not ready in 60 s:\n{log.read_text()}")
        time.sleep(0.2)


def _stop_server(running: Server) -> None:
    code, err = running.stop()
    assert code == 0, f"pravah serve exited with {code} on SIGINT:\n{err}"
    assert "Traceback" not in err, err


@pytest.fixture
def server(cli: Cli, tmp_path: Path) -> Iterator[Server]:
    """`pravah serve` on a free port; stopped with SIGINT, which must end it cleanly."""
    running = _start_server(cli, tmp_path / "serve.log")
    yield running
    _stop_server(running)


class Servers:
    """Starts servers on the test's state folder, one after the other if
    need be (a restart); each is stopped cleanly by `stop` or at the end."""

    def __init__(self, cli: Cli, folder: Path) -> None:
        self.cli, self.folder, self.running = cli, folder, list[Server]()

    def start(self, env: dict[str, str]) -> Server:
        started = _start_server(self.cli, self.folder / f"serve-{len(self.running)}.log", env)
        self.running.append(started)
        return started

    def stop(self, running: Server) -> None:
        self.running.remove(running)
        _stop_server(running)


@pytest.fixture
def servers(cli: Cli, tmp_path: Path) -> Iterator[Servers]:
    started = Servers(cli, tmp_path)
    yield started
    for running in list(started.running):
        started.stop(running)


@pytest.fixture
def s3_server(cli: Cli, tmp_path: Path, moto_url: str) -> Iterator[Server]:
    """`pravah serve` whose engines reach the test S3 server (standard variables only)."""
    from s3_helpers import engine_env

    env = engine_env(moto_url)
    names = [n for n in env if n.startswith(("AWS_", "S3_", "PRAVAH_S3_", "PRAVAH_ALLOWED_"))]
    running = _start_server(cli, tmp_path / "serve-s3.log", {n: env[n] for n in names})
    yield running
    _stop_server(running)


@pytest.fixture
def idle_server(cli: Cli, tmp_path: Path) -> Iterator[Server]:
    """A server without a worker: submitted jobs stay pending until cancelled."""
    running = _start_server(cli, tmp_path / "idle.log", {"PRAVAH_RUN_WORKER": "false"})
    yield running
    _stop_server(running)
