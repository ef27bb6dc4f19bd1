"""The resident behind warm starts: imports the CLI once, forks a child per command.

Why fork: a child of a process that has imported SQLAlchemy, pydantic,
gRPC, Typer and Rich starts with all of it in place, and starts clean: each
command gets a fresh copy of this process as it was after the imports, so
nothing one command does (settings read, engines started, databases
opened) is seen by the next. The child then becomes the caller
(`become_caller`): its standard streams, working directory, umask,
environment and arguments, and runs `pravah.cli.run_here`, the code a cold
`pravah` runs. What the caller's side does is in `pravah.cli.warm_start`.

What must never happen here, before a fork: an event loop, a thread, a gRPC
channel, a database connection, settings read from the environment, or a
console bound to this process's /dev/null streams. `preload` imports
modules only, and the consoles are bound again in the child.

One resident per key (it holds the key's socket name); it serves commands
of its own user only (SO_PEERCRED is checked), ends after PRAVAH_WARM_IDLE
seconds without a command, and ends its children's commands with
SIGHUP, as a closed terminal would, when their caller goes away.

    python -m pravah.cli.resident KEY SYS_PATH_JSON
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import math
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from pravah.cli.warm_start import (
    FORWARDED,
    HEADER,
    MAX_FDS,
    PROTOCOL,
    peer_uid,
    socket_address,
)

__all__ = ["PRELOAD", "become_caller", "main", "preload", "serve"]

DEFAULT_IDLE_SECONDS = 300.0
WAKE_SECONDS = 3600.0
# A caller's whole request arrives within this, or it is dropped.
REQUEST_TIMEOUT = 2.0
# Far above what exec allows a process's arguments and environment (ARG_MAX).
MAX_REQUEST_BYTES = 16 << 20

# What commands would import: the libraries and pravah's modules they use.
PRELOAD = (
    "asyncio",
    "sqlalchemy.ext.asyncio",
    "sqlmodel",
    "pydantic",
    "pydantic_settings",
    "aiosqlite",
    "grpc",
    "grpc.aio",
    "typer",
    "rich.progress",
    "rich.table",
    # Not httpx (the client commands'): with it imported here, a warm 1-file
    # `pravah run` took 0.20 s instead of 0.13 s, for a reason not found yet.
    "pravah.settings",
    "pravah.models",
    "pravah.db",
    "pravah.jobs",
    "pravah.runner",
    "pravah.results",
    "pravah.engine_client",
    "pravah.engine_launcher",
    "pravah.cli.app",
)


def preload() -> None:
    """Imports what commands need (modules only; see the module doc)."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # an optional extra not installed
            importlib.import_module(name)
    # Work every command would do again, done once here: Typer building the
    # Click command (26 ms), SQLAlchemy setting up the mapped classes (13 ms).
    from sqlalchemy.orm import configure_mappers

    from pravah.cli.app import click_command

    click_command()
    configure_mappers()


@dataclass
class _Command:
    """One forked command: its process and the caller waiting for its status."""

    pid: int
    pidfd: int
    conn: socket.socket | None


def _idle_seconds() -> float:
    """PRAVAH_WARM_IDLE, or the default when it is not a number (`inf`: never idle out)."""
    try:
        idle = float(os.environ.get("PRAVAH_WARM_IDLE", DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS
    return DEFAULT_IDLE_SECONDS if math.isnan(idle) else max(0.0, idle)


def _recv_exactly(conn: socket.socket, size: int, left: Callable[[], float]) -> bytes:
    data = b""
    while len(data) < size:
        conn.settimeout(left())
        chunk = conn.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError("the caller closed the connection mid-request")
        data += chunk
    return data


def _checked(request: object) -> dict[str, Any]:
    """The request if it has the shape warm_start sends, else ValueError."""
    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        raise ValueError("not a request of this protocol version")
    argv, env, umask = request.get("argv"), request.get("env"), request.get("umask")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError("env must map names to strings")
    if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
        raise ValueError("env holds a name or value the OS cannot take")
    if any("\0" in a for a in argv):
        raise ValueError("argv holds a NUL")
    if not (isinstance(umask, int) and 0 <= umask <= 0o777):
        raise ValueError("umask must be an integer 0-0o777")
    targets, ignored = request.get("fds"), request.get("ignored")
    if not (
        isinstance(targets, list)
        and all(isinstance(fd, int) and 0 <= fd < 1 << 20 for fd in targets)
        and targets[:3] == [0, 1, 2]
        and len(set(targets)) == len(targets)
    ):
        raise ValueError("fds must list distinct descriptor numbers, 0, 1 and 2 first")
    if not (isinstance(ignored, list) and all(s in FORWARDED for s in ignored)):
        raise ValueError("ignored must list signals a caller forwards")
    return request


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The caller's request and its descriptors (as it numbers them, then its cwd).

    The whole request must arrive within REQUEST_TIMEOUT: the resident reads
    one at a time, and a caller that trickles bytes must not hold up others.
    """
    deadline = time.monotonic() + REQUEST_TIMEOUT

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took too long")
        return remaining

    conn.settimeout(left())
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, MAX_FDS + 1)
    try:
        header += _recv_exactly(conn, HEADER.size - len(header), left)
        (size,) = HEADER.unpack(header)
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"a request of {size} bytes")
        request = _checked(json.loads(_recv_exactly(conn, size, left)))
        if len(fds) != len(request["fds"]) + 1:
            raise ValueError("the descriptors do not match the request")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return request, fds


def _send(conn: socket.socket, answer: dict[str, int]) -> bool:
    """Sends one answer line; False when the caller has gone."""
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        return False
    return True


def _reopen_std_streams() -> None:
    """Text streams over descriptors 0-2 as the interpreter makes them at start-up.

    Buffering follows the caller's streams (line-buffered on a terminal),
    encoding and error handler are this process's own: the key holds the
    locale and PYTHONIOENCODING, so they are the ones a cold start would pick.
    """
    made = []
    streams = ((0, sys.__stdin__, "rb"), (1, sys.__stdout__, "wb"), (2, sys.__stderr__, "wb"))
    for fd, old, mode in streams:
        assert old is not None
        interactive = fd == 2 or (fd == 1 and os.isatty(fd))
        made.append(
            io.TextIOWrapper(
                open(fd, mode, closefd=False),  # noqa: SIM115 - lives as long as the process
                encoding=old.encoding,
                errors=old.errors,
                line_buffering=fd != 0 and interactive,
            )
        )
    sys.stdin, sys.stdout, sys.stderr = made


def _out_of_the_way(fd: int) -> int:
    """``fd`` moved to a number no caller's descriptor takes in practice (1024 up)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1024)
    os.close(fd)
    return int(high)


def _take_descriptors(received: list[int], targets: list[int], also_keep: int) -> None:
    """Gives the caller's descriptors their numbers (0, 1, 2, 3 for `3>file`...)
    and closes every other one this process has but ``also_keep``."""
    high = [_out_of_the_way(fd) for fd in received]  # one may hold a target's number
    keep = set(targets) | set(high) | {also_keep}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor
            if int(name) not in keep:
                os.close(int(name))
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target)  # inheritable, as the caller had it
        os.close(fd)


def become_caller(request: dict[str, Any], fds: list[int], conn: socket.socket) -> NoReturn:
    """In the forked child: take on the caller's process state and run its command.

    Runs with the forwarded signals blocked (see _Resident._accept) until
    their dispositions are those of a fresh interpreter in the caller's place.
    The exit status goes to the caller on ``conn`` as well as from the
    resident: it arrives even if the resident is killed meanwhile.
    """
    *passed, cwd = fds
    os.fchdir(cwd)
    os.close(cwd)
    conn = socket.socket(fileno=_out_of_the_way(conn.detach()))
    _take_descriptors(passed, request["fds"], also_keep=conn.fileno())

    def report(code: int) -> None:
        _send(conn, {"exit": code})

    for sig in (*FORWARDED, signal.SIGCHLD):
        if sig in request["ignored"]:
            signal.signal(sig, signal.SIG_IGN)
        elif sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
        else:
            signal.signal(sig, signal.SIG_DFL)
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # found again from the caller's TMPDIR, if anything asked
    sys.argv = list(request["argv"])
    _reopen_std_streams()
    from pravah.cli import run_here
    from pravah.cli.common import bind_consoles

    bind_consoles()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    run_here(report)


def _run_as_caller(request: dict[str, Any], fds: list[int], conn: socket.socket) -> NoReturn:
    """`become_caller`, ending as a cold interpreter ends when something escapes it."""
    try:
        become_caller(request, fds, conn)
    except KeyboardInterrupt:  # Ctrl-C before the command set its own handlers
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()  # on the caller's stderr
        os._exit(1)
    finally:
        os._exit(70)


class _Resident:
    """The accept loop: one forked child per request, its status sent back."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.commands: dict[int, _Command] = {}  # by pidfd
        self.last_activity = time.monotonic()
        self.stopping = False

    def stop(self, signum: int, frame: object) -> None:
        """SIGTERM: take no more commands; those running finish and get their status."""
        if not self.stopping:
            self.stopping = True
            self.selector.unregister(self.listener)
            self.listener.close()
        if not self.commands:
            raise SystemExit(0)

    def serve(self, idle: float) -> None:
        while True:
            timeout = None
            if not self.commands:
                if self.stopping:
                    return
                left = idle - (time.monotonic() - self.last_activity)
                if left <= 0:
                    return
                timeout = min(left, WAKE_SECONDS)  # select() takes no more than ~24 days
            events = self.selector.select(timeout)
            for key, _ in events:
                if key.data == "accept":
                    self._accept()
                elif key.data[0] == "ended":
                    self._reap(key.data[1])
                else:
                    self._caller_gone(key.data[1])
            if events:
                self.last_activity = time.monotonic()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if peer_uid(conn) != os.getuid():
                conn.close()
                return
            request, fds = _read_request(conn)
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
            conn.close()
            return
        # A signal the caller forwards to the new child must not run this
        # process's handlers there (stop() would end the resident's loop):
        # blocked over the fork, the child unblocks it once it has its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:
            # First of all, so that a caller that hears no pid knows nothing ran.
            told = _send(conn, {"pid": os.getpid()})
            self._close_inherited()
            if not told:
                os._exit(0)  # the caller has gone: no one wants the command now
            _run_as_caller(request, fds, conn)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.commands[pidfd] = _Command(pid, pidfd, conn)
        self.selector.register(pidfd, selectors.EVENT_READ, ("ended", pidfd))
        self.selector.register(conn, selectors.EVENT_READ, ("caller", pidfd))

    def _close_inherited(self) -> None:
        """In the child: nothing of the resident's stays open (its name above all)."""
        self.selector.close()
        self.listener.close()
        for command in self.commands.values():
            os.close(command.pidfd)
            if command.conn is not None:
                command.conn.close()

    def _reap(self, pidfd: int) -> None:
        command = self.commands.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(command.pid, 0)
        if command.conn is not None:
            _send(command.conn, {"exit": os.waitstatus_to_exitcode(status)})
            self.selector.unregister(command.conn)
            command.conn.close()

    def _caller_gone(self, pidfd: int) -> None:
        """The caller closed its end (killed, say): end the command as a hang-up would."""
        command = self.commands[pidfd]
        assert command.conn is not None
        self.selector.unregister(command.conn)
        command.conn.close()
        command.conn = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(command.pid, signal.SIGHUP)


def serve(key: str) -> None:
    """Runs the resident of ``key`` until it is idle long enough."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:  # Linux 5.3 or later: how the loop hears that a command has ended
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # The name first: a second resident of the key ends here, before it
        # spends a second of CPU on imports. Until listen(), callers are
        # refused and run cold.
        listener.bind(socket_address(key))
    except OSError:
        listener.close()
        return
    with listener:
        preload()
        listener.listen(64)
        resident = _Resident(listener)
        signal.signal(signal.SIGTERM, resident.stop)
        resident.serve(_idle_seconds())


def main() -> None:
    key, sys_path = sys.argv[1], json.loads(sys.argv[2])
    sys.path[:] = sys_path  # as the caller imports: its script folder, not ours
    serve(key)


if __name__ == "__main__":
    main()
