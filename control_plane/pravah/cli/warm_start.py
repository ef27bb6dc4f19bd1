"""Warm start: hand a `pravah` command to a resident copy of the CLI.

Why: a cold `pravah` process spends about 0.4 s of CPU importing its stack
(SQLAlchemy, pydantic, gRPC, Typer, Rich) before it does anything. On a
small job that is most of the run, and on a 2-core machine it competes with
the engine for the cores. A resident process (`pravah.cli.resident`) has
imported all of it once; for each command it forks a child that takes over
this process's standard streams, working directory, environment, umask and
arguments and runs the very same `main`. Whatever the command prints, reads
or exits with is its own; this process only forwards signals and passes
the exit status on. It is the shape of Bazel's server or Gradle's daemon.

Which resident serves a command is decided by a key over everything a
forked child could not change afterwards: the interpreter, the installed
code (file times and sizes), the user, resource limits, cgroup and
namespaces, and the environment variables read before a command starts
(see KEY_PREFIXES). A change to any of them means another
resident, so a stale one is never used; it just idles out.

Lifecycle: with no resident for the key, the command runs cold in this
process and, on its way out, starts one in the background (its own session,
no terminal, standard streams on /dev/null). A resident exits after
PRAVAH_WARM_IDLE seconds (default 300) with no command, or on SIGTERM
(`pkill -f pravah.cli.resident`). PRAVAH_WARM_START=off turns all of it off:
every command then runs cold and nothing is left running. `serve`, `worker`
and `engine` always run cold: they are long-lived and belong to whoever
started them.

This module is imported by every command before anything else, so it uses
the standard library only and costs a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from functools import cache
from types import FrameType

__all__ = [
    "KEY_NAMES",
    "KEY_PREFIXES",
    "handed_over",
    "peer_uid",
    "resident_key",
    "socket_address",
    "start_resident",
    "wanted",
]

# Commands that stay in the process that was started for them.
COLD_COMMANDS = frozenset({"serve", "engine", "worker"})

# The environment variables read before a command runs: by the loader and
# the interpreter at start-up (LD_*, PYTHON*, the locale, HOME for the user's
# site folder), or by the libraries a resident imports, at import time
# (typer, OpenTelemetry, protobuf and structlog read those named here; found
# by listing every module-level read of os.environ in what PRELOAD loads).
# A resident must not serve a command with other values than it started
# with, so these are part of the key. Every other variable (PRAVAH_*,
# DATABASE_URL, AWS_*, PATH, TERM, COLUMNS...) is read while the command
# runs, after the child has taken the caller's environment.
KEY_PREFIXES = (
    "PYTHON",
    "_PYTHON",
    "LC_",
    "LD_",
    "MALLOC_",
    "PYDANTIC_",
    "TYPER_",
    "_TYPER_",
    "GRPC_",
    "OTEL_",
    "PROTOCOL_BUFFERS_",
    "SQLALCHEMY_",
    "PRAVAH_WARM_",
)
KEY_NAMES = frozenset(
    {
        "LANG",
        "LANGUAGE",
        "HOME",
        "GLIBC_TUNABLES",
        "NO_COLOR",
        "FORCE_COLOR",
        "PY_COLORS",
        "TERMINAL_WIDTH",
        "GITHUB_ACTIONS",
    }
)

# One request: 4 bytes of length, then a JSON document; the standard streams
# and the working directory travel beside the first byte as SCM_RIGHTS.
HEADER = struct.Struct("!I")
PROTOCOL = 1


def wanted(argv: list[str], environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """True when this command may be handed to (or start) a resident."""
    if environ.get("PRAVAH_WARM_START", "on").strip().lower() in ("off", "0", "false", "no"):
        return False
    command = next((a for a in argv[1:] if not a.startswith("-")), None)
    return (
        command not in COLD_COMMANDS
        and hasattr(os, "pidfd_open")
        and not _sandboxed()
        and not _in_the_background()
    )


def _in_the_background() -> bool:
    """True for a background job of a terminal (`pravah ... &` in an interactive shell).

    The terminal stops such a job when it reads from it (SIGTTIN), and when
    it writes if `stty tostop` is set. A resident's child has no terminal
    of its own, so the terminal could not stop it: the job runs cold.
    """
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp():
                return True
        except OSError:
            continue
    return False


@cache
def _status() -> dict[str, str]:
    """This process's /proc/self/status, by field (read once: `wanted` runs
    before and after a cold command, and the key reads it too)."""
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _sandboxed() -> bool:
    """True for a process confined in ways a resident could not copy.

    A seccomp filter, Landlock rules (which need no_new_privs) and
    no_new_privs itself belong to the process that set them up: a command
    forked from a resident started elsewhere would run without them. Such a
    process runs its commands itself, and starts no resident.
    """
    status = _status()
    return status.get("NoNewPrivs", "0") != "0" or status.get("Seccomp", "0") != "0"


def _in_key(name: str) -> bool:
    if name == "PRAVAH_WARM_START":  # only "off" matters, and then there is no key
        return False
    return name in KEY_NAMES or name.startswith(KEY_PREFIXES)


def _code_files(root: str) -> Iterator[tuple[str, int, int]]:
    """Path, time and size of every file of the pravah package (the code a resident loaded)."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    yield from _code_files(entry.path)
            else:
                info = entry.stat()
                yield entry.path, info.st_mtime_ns, info.st_size


@cache
def resident_key() -> str:
    """The key of the resident that may serve this process's commands; see the module doc."""
    import resource

    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        digest.update(repr(parts).encode("utf-8", "surrogateescape"))

    add(PROTOCOL, sys.executable, sys.version, os.getuid(), os.getgid(), os.getgroups())
    # The interpreter's options (-X utf8, -X dev, -O, -W...), which the resident starts with.
    add(tuple(sys.flags), sys._xoptions, sys.warnoptions)
    # The root directory: a chroot with the same files bind-mounted would
    # otherwise be served by a resident outside it.
    root = os.stat("/")
    add(root.st_dev, root.st_ino)
    add(sorted((k, v) for k, v in os.environ.items() if _in_key(k)))
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        add(name, resource.getrlimit(getattr(resource, name)))
    add(os.getresuid(), os.getresgid())
    for ns in ("pid", "mnt", "user", "net", "uts", "ipc", "cgroup", "time"):
        try:
            add(ns, os.stat(f"/proc/self/ns/{ns}").st_ino)
        except OSError:
            add(ns, None)
    for path in ("/proc/self/cgroup", "/proc/self/attr/current", "/proc/self/oom_score_adj"):
        try:
            with open(path, "rb") as trait:
                add(path, trait.read())
        except OSError:
            add(path, None)
    # What a forked child would inherit from the resident instead of from
    # this process: capabilities, CPUs and memory nodes, priority, scheduling
    # and I/O class (`nice -n 19 ionice -c3 taskset -c 1 pravah ...`).
    status = _status()
    add(sorted((k, v) for k, v in status.items() if k.startswith(("Cap", "Cpus_", "Mems_"))))
    add(os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), _io_priority())
    # The installed code: pravah's own files, and every import folder's time
    # (a package installed, upgraded or removed changes its folder).
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    add(sorted(_code_files(package)))
    for folder in sys.path:
        try:
            add(folder, os.stat(folder or ".").st_mtime_ns)
        except OSError:
            add(folder, None)
    return digest.hexdigest()[:24]


# ioprio_get(2) by machine; Python has no binding for it.
IOPRIO_GET = {"x86_64": 252, "aarch64": 31, "riscv64": 31, "i686": 290, "armv7l": 315}


def _io_priority() -> int | None:
    """The I/O class and level `ionice` sets, or None where it cannot be read."""
    number = IOPRIO_GET.get(os.uname().machine)
    if number is None:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(number, 1, 0))  # IOPRIO_WHO_PROCESS, this process


def socket_address(key: str) -> bytes:
    """The resident's address: a name in Linux's abstract socket namespace.

    Why abstract: no file to clean up after a resident that was killed, and
    binding the name is the lock that keeps a second resident of the key
    from starting. Anyone may bind or connect to such a name, so both sides
    check the other's user (SO_PEERCRED) before they trust it.
    """
    return f"\0pravah-warm-{os.getuid()}-{key}".encode()


def peer_uid(conn: socket.socket) -> int:
    """The user of the process at the other end of a Unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


# The signals a caller passes on to the child running its command.
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGTSTP,
)
# Descriptors one request may carry (the kernel's SCM_MAX_FD is 253).
MAX_FDS = 250


class _Forwarder:
    """Passes the signals this process gets on to the child that runs the command."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.previous = {sig: signal.signal(sig, self._handle) for sig in FORWARDED}
        # Ignored when this process started (nohup, `&` in a script): the child
        # ignores them too; still passed on, for the handlers a command sets.
        self.ignored = [int(s) for s, h in self.previous.items() if h == signal.SIG_IGN]

    def release(self) -> None:
        """No child after all (the command runs here): the handlers as they were,
        and the signals that came meanwhile delivered to this process."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        for signum in self.pending:
            os.kill(os.getpid(), signum)
        self.pending.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pid is None:
            self.pending.append(signum)  # the child is not known yet
            return
        self._send(signum)

    def _send(self, signum: int) -> None:
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.kill(self.pid, signum)
        if signum == signal.SIGTSTP:  # Ctrl-Z: this process stops too, as the shell expects
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)
            signal.signal(signal.SIGTSTP, self._handle)  # continued (fg, bg)

    def attach(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._send(signum)
        self.pending.clear()


def _inherited_fds() -> list[int] | None:
    """The descriptors this process was started with (inheritable ones: those its
    parent passed, such as `3>file` or bash's `>(...)`), or None when one of the
    standard three is closed (the socket would take its number), or /proc is
    not there to ask."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    fds = []
    for name in names:
        fd = int(name)
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the folder's own descriptor, closed by now
            continue
    fds.sort()
    if fds[:3] != [0, 1, 2] or len(fds) > MAX_FDS:
        return None
    return fds


def _lines(conn: socket.socket) -> Iterator[dict[str, int]]:
    """The resident's answers, one JSON object per line, until it closes."""
    buffer = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)


def _send_request(
    conn: socket.socket,
    answers: Iterator[dict[str, int]],
    argv: list[str],
    fds: list[int],
    ignored: list[int],
) -> int | None:
    """Sends the command; the pid of the child running it, or None if none runs it.

    The child itself writes its pid before it does anything else, so no pid
    means the command did not start: it can then run here without running twice.
    """
    try:
        # O_PATH: a folder this user may enter but not list is still a cwd.
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        request = json.dumps(
            {
                "protocol": PROTOCOL,
                "argv": argv,
                "env": dict(os.environ),
                "umask": mask,
                "fds": fds,
                "ignored": ignored,
            }
        ).encode()
        socket.send_fds(conn, [HEADER.pack(len(request))], [*fds, cwd])
        conn.sendall(request)
        started = next(answers, None)
    except (OSError, ValueError):
        return None
    finally:
        os.close(cwd)
    return started.get("pid") if started is not None else None


def handed_over(argv: list[str]) -> int | None:
    """Runs the command in a resident's child; its exit status, or None to run it here.

    None means nothing was started: no resident, or one that could not take
    the command (a closed standard stream, a resident that just exited).
    """
    if not wanted(argv):
        return None
    fds = _inherited_fds()  # before the socket exists
    if fds is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.connect(socket_address(resident_key()))
        # Another user's process holding the name would get our streams,
        # environment and secrets: never talk to one.
        if peer_uid(conn) != os.getuid():
            raise ConnectionRefusedError("the resident's name is held by another user")
    except OSError:
        conn.close()
        return None
    with conn:
        # Installed before the request goes: a signal in between is passed on too.
        forwarder = _Forwarder()
        answers = _lines(conn)  # one reader: both answers may come in one read
        started = _send_request(conn, answers, argv, fds, forwarder.ignored)
        if started is None:
            forwarder.release()
            return None
        forwarder.attach(started)
        # The child reports its status as it exits, the resident when it reaps
        # it (or it was killed): the first one counts.
        try:
            ended = next(answers, None)
        except (OSError, ValueError):
            ended = None
    if ended is None or "exit" not in ended:
        print("pravah: the resident process ended during the command", file=sys.stderr)
        return 1
    code = ended["exit"]
    if code < 0:  # ended by a signal: end the same way, as the shell expects
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return int(code)


# Residents one user may have at once (each holds about 60-85 MB): beyond
# that, commands with yet another key run cold. PRAVAH_WARM_MAX changes it.
MAX_RESIDENTS = 8
# Held until the process ends: a Popen collected while its child runs warns.
_started: list[object] = []


def _residents_of_this_user() -> int:
    """Residents listening now, by their socket names in /proc/net/unix."""
    prefix = f" @pravah-warm-{os.getuid()}-"
    try:
        with open("/proc/net/unix") as table:
            return sum(1 for line in table if prefix in line)
    except OSError:
        return 0


def start_resident() -> None:
    """Starts a resident for this process's key in the background (see the module doc)."""
    try:
        most = int(os.environ.get("PRAVAH_WARM_MAX", MAX_RESIDENTS))
    except ValueError:
        most = MAX_RESIDENTS
    if not wanted(sys.argv) or _residents_of_this_user() >= most:
        return
    import subprocess

    # A failure to start one is no failure: the next command runs cold too.
    with contextlib.suppress(OSError):
        _started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    # -X utf8, -O, -W...: part of the key, so the resident's too.
                    *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                    "-m",
                    "pravah.cli.resident",
                    resident_key(),
                    json.dumps(sys.path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        )
