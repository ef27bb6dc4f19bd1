"""Helpers for the CLI end-to-end tests: running `pravah`, a CSV tree, a server handle.

Why a module beside conftest.py: the tests import these names, and a
uniquely named module imports unambiguously (every test folder has a
`conftest`). Fixtures that use them live in this folder's conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from auth_helpers import AUTH, TEST_ADMIN_KEY

__all__ = ["AUTH", "TEST_ADMIN_KEY"]

REPO = Path(__file__).resolve().parents[2]
PRAVAH = Path(sys.executable).parent / "pravah"


@dataclass
class Cli:
    """Runs `pravah` with a private state folder and a clean environment."""

    env: dict[str, str]
    cwd: Path
    state_dir: Path

    def run(
        self, *args: str, timeout: float = 180.0, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [str(PRAVAH), *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def popen(
        self, *args: str, log: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Starts `pravah`; with ``log`` its stderr goes to that file (servers log a lot,
        and a full pipe would block them)."""
        stderr = log.open("w") if log is not None else subprocess.PIPE
        try:
            return subprocess.Popen(
                [str(PRAVAH), *args],
                env={**self.env, **(extra_env or {})},
                cwd=self.cwd,
                stdout=subprocess.PIPE if log is None else subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        finally:
            if log is not None and not isinstance(stderr, int):
                stderr.close()


def job_rows(db: Path) -> list[tuple[str, str]]:
    """(id, status) of every job in an embedded store; none while it cannot be read yet."""
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return list(conn.execute("SELECT id, status FROM jobs"))
    except sqlite3.Error:
        return []


def clean_env() -> dict[str, str]:
    """Our environment without PRAVAH_* settings, plus the test admin key.

    Servers take the key as PRAVAH_ADMIN_KEY, client commands send it from
    PRAVAH_API_KEY, so every test runs with authentication on.
    """
    dropped = ("DATABASE_URL", "LOG_LEVEL")
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("PRAVAH_") or k.startswith("PRAVAH_WARM_")) and k not in dropped
    }
    env.update(PRAVAH_ADMIN_KEY=TEST_ADMIN_KEY, PRAVAH_API_KEY=TEST_ADMIN_KEY)
    return env


# Expected outcome per file of the tree below: columns, or the error kind.
TREE_RESULTS: dict[str, list[str] | str] = {
    "people.csv": ["id", "name", "email"],
    "nested/more.csv": ["id", "name", "email"],
    "semi.csv": ["sku", "price", "qty"],
    "tabs.tsv": ["a", "b"],
    "quoted.csv": ["last, first", "age", 'say "hi"'],
    "empty.csv": "invalid_data",
    "blob.csv": "invalid_data",
}


def make_cli_tree(root: Path) -> Path:
    """A small tree: delimiters , ; tab, a quoted header, an empty and a binary file.

    `nested/more.csv` is the only file of 1 KB or more (for --min-size), and
    `.hidden/secret.csv` is skipped unless hidden files are asked for.
    """
    (root / "nested").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "people.csv").write_text("id,name,email\n1,Ann,ann@example.com\n")
    rows = "".join(f"{i},name{i},user{i}@example.com\n" for i in range(60))
    (root / "nested" / "more.csv").write_text("id,name,email\n" + rows)
    (root / "semi.csv").write_text("sku;price;qty\nA-1;9.50;3\n")
    (root / "tabs.tsv").write_text("a\tb\n1\t2\n")
    (root / "quoted.csv").write_text('"last, first",age,"say ""hi"""\n"Doe, J",3,x\n')
    (root / "empty.csv").write_bytes(b"")
    (root / "blob.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / ".hidden" / "secret.csv").write_text("secret,cols\n")
    assert (root / "nested" / "more.csv").stat().st_size >= 1000
    return root


def make_large_tree(root: Path, folders: int = 100, per_folder: int = 300) -> Path:
    """Many small CSV files (30,000 by default): a job long enough to interrupt."""
    for d in range(folders):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        for f in range(per_folder):
            (folder / f"f{f:03d}.csv").write_text("id,value\n1,2\n")
    return root


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    Regression: a port taken with bind(0) and closed again came from the
    ephemeral range, and `pravah serve` starts its local engine (which binds
    port 0) before it binds its own port, so the engine sometimes got the
    very port the test had picked. Ports below the range are never handed
    out for port 0.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low // 2), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log: Path
    state_dir: Path | None = None

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGINT, then wait; returns the exit code and the server's stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"pravah serve ignored SIGINT for {timeout} s:\n{self.log.read_text()}"
            ) from None
        return self.process.returncode, self.log.read_text()


def wait_for(predicate: object, timeout: float, message: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, a short message on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
