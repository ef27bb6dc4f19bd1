"""Warm start: a command handed to a resident behaves as the same command run cold.

Each test gives its commands a PRAVAH_WARM_TAG of its own: every PRAVAH_WARM_*
variable is part of the resident's key, so the test gets a resident of its
own, and stops it at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import PRAVAH, TREE_RESULTS, Cli, job_rows
from pravah.cli.warm_start import HEADER, PROTOCOL, socket_address


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))


class Warm:
    """The `pravah` commands of one test, and the resident that serves them."""

    def __init__(self, cli: Cli, tag: str) -> None:
        self.cli = cli
        self.tag = tag
        cli.env.update(PRAVAH_WARM_START="on", PRAVAH_WARM_TAG=tag)

    def residents(self) -> list[int]:
        return [
            pid
            for pid in _pids()
            if "pravah.cli.resident" in _cmdline(pid)
            and _environ(pid).get("PRAVAH_WARM_TAG") == self.tag
        ]

    def key(self) -> str:
        (pid,) = self.residents()
        return _cmdline(pid)[_cmdline(pid).index("pravah.cli.resident") + 1]

    def wait_for_resident(self) -> int:
        deadline = time.monotonic() + 60
        while True:
            found = self.residents()
            if found and self._listening():
                return found[0]
            assert time.monotonic() < deadline, "no resident started after a cold command"
            time.sleep(0.05)

    def _listening(self) -> bool:
        return self._listening_on(self.key())

    @staticmethod
    def _listening_on(key: str, *, or_bound: bool = False) -> bool:
        """Bound and listening (flag __SO_ACCEPTCON); with ``or_bound``, bound at all."""
        name = "@" + socket_address(key)[1:].decode()
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[-1] == name and (or_bound or int(fields[3], 16) & 0x10000):
                return True
        return False

    def stop(self) -> None:
        for pid in self.residents():
            os.kill(pid, signal.SIGTERM)


@pytest.fixture
def warm(cli: Cli) -> Iterator[Warm]:
    handle = Warm(cli, uuid.uuid4().hex)
    try:
        yield handle
    finally:
        handle.stop()


def _started(warm: Warm) -> int:
    """A cold command (which starts the resident), then the resident's pid."""
    first = warm.cli.run("--version")
    assert first.returncode == 0, first.stderr
    return warm.wait_for_resident()


def _engines_of(cli: Cli) -> list[int]:
    state = str(cli.state_dir)
    return [
        pid
        for pid in _pids()
        if any("pravah-engine" in part for part in _cmdline(pid)[:1])
        and _environ(pid).get("PRAVAH_STATE_DIR") == state
    ]


def _in_shell(
    cli: Cli, script: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`sh -c SCRIPT sh ARGS...` with the test's environment; $0 is sh, "$@" the args.

    A shell sets up what the command inherits: umask, redirections, traps.
    """
    return subprocess.run(
        ["sh", "-c", script, "sh", *args],
        input=stdin,
        env={**cli.env, **(env or {})},
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _running(cli: Cli, tree: Path, *wrapper: str) -> subprocess.Popen[str]:
    """`pravah run TREE --task csv-header --json` (behind ``wrapper``), once its job runs."""
    process = subprocess.Popen(
        [*wrapper, str(PRAVAH), "run", str(tree), "--task", "csv-header", "--json"],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    db = cli.state_dir / "pravah.db"
    deadline = time.monotonic() + 60
    while not any(status == "running" for _, status in job_rows(db)) or not _engines_of(cli):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the job never started running"
        time.sleep(0.02)
    return process


def test_a_warm_run_gives_what_a_cold_run_gives(warm: Warm, csv_dir: Path, tmp_path: Path) -> None:
    """Same results, same summary, same exit status; relative paths, the caller's
    state folder and umask apply although the resident started elsewhere."""
    resident = _started(warm)
    cli = warm.cli
    link = cli.cwd / "data"
    link.symlink_to(csv_dir)
    outputs = {}
    for mode in ("off", "on"):
        env = {"PRAVAH_WARM_START": mode, "PRAVAH_STATE_DIR": str(tmp_path / f"state-{mode}")}
        # umask is a property of the shell that runs the command.
        result = _in_shell(
            cli,
            f'umask 027 && exec "{PRAVAH}" "$@"',
            *("run", "data", "--task", "csv-header", "--output", f"out-{mode}.jsonl"),
            env=env,
        )
        assert result.returncode == 0, result.stderr
        out = cli.cwd / f"out-{mode}.jsonl"
        lines = sorted(
            json.loads(line)["path"] + str(json.loads(line).get("columns"))
            for line in out.read_text().splitlines()
        )
        outputs[mode] = (lines, out.stat().st_mode & 0o777, result.stdout.split("job ")[0])
        assert len(job_rows(tmp_path / f"state-{mode}" / "pravah.db")) == 1
    assert outputs["on"] == outputs["off"]
    assert warm.residents() == [resident]  # the same resident, still there


def test_a_warm_run_runs_in_the_residents_child_and_stops_on_ctrl_c(
    warm: Warm, large_tree: Path
) -> None:
    resident = _started(warm)
    cli = warm.cli
    process = _running(cli, large_tree)
    (engine,) = _engines_of(cli)
    command = _parent(engine)
    assert command is not None and command != process.pid
    assert _parent(command) == resident  # served warm: the command is the resident's child
    process.send_signal(signal.SIGINT)  # what the terminal sends the command it started
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert json.loads(out)["status"] == "cancelled"
    assert _engines_of(cli) == []
    # The child tells its status just before it exits: gone (and reaped) soon after.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{command}").exists():
        assert time.monotonic() < deadline, "the command's process outlived its caller"
        time.sleep(0.02)


def test_a_killed_caller_cancels_its_warm_command(warm: Warm, large_tree: Path) -> None:
    """SIGKILL reaches no handler of the caller; the resident sees it gone and
    hangs the command up, as a closed terminal would: cancelled, engine stopped."""
    _started(warm)
    cli = warm.cli
    db = cli.state_dir / "pravah.db"
    process = _running(cli, large_tree)
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while _engines_of(cli) or any(status == "running" for _, status in job_rows(db)):
        assert time.monotonic() < deadline, (_engines_of(cli), job_rows(db))
        time.sleep(0.05)
    assert [status for _, status in job_rows(db)] == ["cancelled"]


def test_exit_status_streams_and_stdin_are_the_callers(warm: Warm, tmp_path: Path) -> None:
    _started(warm)
    cli = warm.cli
    bad = cli.run("run", str(tmp_path / "missing"), "--task", "csv-header")
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and bad.stdout == ""
    # A pipeline read from standard input, which the command got as a descriptor.
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n")
    piped = _in_shell(
        cli,
        f'exec "{PRAVAH}" run "$1" --pipeline /dev/stdin --json',
        str(data),
        stdin="steps:\n  - task: csv-header\n",
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["status"] == "completed"


def test_without_warm_start_nothing_stays_running(cli: Cli) -> None:
    tag = uuid.uuid4().hex
    warm = Warm(cli, tag)
    cli.env["PRAVAH_WARM_START"] = "off"
    assert cli.run("--version").returncode == 0
    time.sleep(1.0)
    assert warm.residents() == []


def test_past_the_cap_of_residents_a_command_starts_none(cli: Cli) -> None:
    warm = Warm(cli, uuid.uuid4().hex)
    cli.env["PRAVAH_WARM_MAX"] = "0"  # any residents this user has reach it
    assert cli.run("--version").returncode == 0
    time.sleep(1.0)
    assert warm.residents() == []


def test_an_idle_resident_ends_by_itself(warm: Warm) -> None:
    warm.cli.env["PRAVAH_WARM_IDLE"] = "1"
    resident = _started(warm)
    deadline = time.monotonic() + 30
    # Ended: gone, or a zombie until whoever adopted it reaps it.
    while _cmdline(resident) not in ([], [""]):
        assert time.monotonic() < deadline, "the resident outlived PRAVAH_WARM_IDLE"
        time.sleep(0.1)


def test_garbage_on_the_residents_socket_is_dropped_and_it_keeps_serving(warm: Warm) -> None:
    _started(warm)
    address = socket_address(warm.key())
    attempts: list[bytes] = [
        b"",  # connects and closes
        b"GET / HTTP/1.1\r\n\r\n",  # no descriptors
        HEADER.pack(2**31) + b"{",  # a length it never sends (and may not)
    ]
    for payload in attempts:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            conn.sendall(payload)
    # Descriptors with a request of another protocol, and with broken JSON.
    good = {"protocol": PROTOCOL, "argv": ["pravah", "--version"], "env": {}, "umask": 18}
    bodies = [
        json.dumps({**good, "protocol": PROTOCOL + 1}).encode(),
        b"{not json",
        b"[1, 2]",  # JSON, but not an object: crashed the resident before
        b"[" * 100_000,  # nested too deep for the parser: so did this
        json.dumps({**good, "argv": "pravah --version"}).encode(),
        json.dumps({**good, "env": {"A": 1}}).encode(),
        json.dumps({**good, "env": {"A=B": "c"}}).encode(),
        json.dumps({**good, "umask": "022"}).encode(),
    ]
    for body in bodies:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            with open(os.devnull) as null:
                fd = null.fileno()
                socket.send_fds(conn, [HEADER.pack(len(body))], [fd, fd, fd, fd])
            conn.sendall(body)
            conn.settimeout(10)
            assert conn.recv(100) == b""  # closed without running anything
    result = warm.cli.run("--version")
    assert result.returncode == 0 and result.stdout.startswith("pravah ")
    assert len(warm.residents()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_name_held_by_another_user_is_never_handed_a_command(cli: Cli) -> None:
    """Whoever binds the name first gets it; a command must not give its streams
    and environment (with its secrets) to another user's process."""
    warm = Warm(cli, uuid.uuid4().hex)
    # The key this environment's commands use, from a resident of theirs, stopped.
    resident = _started(warm)
    key = warm.key()
    warm.stop()
    deadline = time.monotonic() + 30
    while warm._listening_on(key, or_bound=True):
        assert time.monotonic() < deadline, f"resident {resident} did not stop on SIGTERM"
        time.sleep(0.05)
    squatter = subprocess.Popen(
        [
            "python3",
            "-c",
            "import os, socket, sys, time\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.bind(sys.argv[1].encode().replace(b'@', b'\\0', 1))\n"
            "s.listen(); print('ready', flush=True)\n"
            "c, _ = s.accept(); c.settimeout(5); data = c.recv(100)\n"
            "print('got', len(data), flush=True)\n",
            "@" + socket_address(key)[1:].decode(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready"
        result = cli.run("--version")
        assert result.returncode == 0 and result.stdout.startswith("pravah ")  # ran cold
        out, _ = squatter.communicate(timeout=10)
        assert out.strip() == "got 0"  # it learnt nothing
    finally:
        squatter.kill()
        warm.stop()


def _on_a_terminal(cli: Cli, *args: str, extra_env: dict[str, str]) -> str:
    """What `pravah` writes when its output is a terminal (a pseudo-terminal here)."""
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(PRAVAH), *args],
            env={**cli.env, **extra_env},
            cwd=cli.cwd,
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=secondary,
        )
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=120) == 0, output
    finally:
        os.close(primary)
    return output.decode(errors="replace")


def test_a_warm_command_on_a_terminal_styles_its_output_as_a_cold_one(
    warm: Warm, csv_dir: Path
) -> None:
    """The resident's own streams are /dev/null: its child must look at the caller's."""
    _started(warm)
    args = ("run", str(csv_dir), "--task", "csv-header")
    cold = _on_a_terminal(warm.cli, *args, extra_env={"PRAVAH_WARM_START": "off"})
    served = _on_a_terminal(warm.cli, *args, extra_env={})
    assert "\x1b[1;32mcompleted" in cold  # the status in bold green, as on any terminal
    assert "\x1b[1;32mcompleted" in served
    assert served.count("\x1b[") > 10


def test_descriptors_beyond_the_standard_three_are_passed(warm: Warm, csv_dir: Path) -> None:
    """`--output /dev/fd/3 3>file`, and bash's `--output >(gzip > x.gz)`, name a
    descriptor the command was started with."""
    _started(warm)
    cli = warm.cli
    script = f'exec "{PRAVAH}" run "$1" --task csv-header --output /dev/fd/3 3>"$2"'
    result = _in_shell(cli, script, str(csv_dir), str(cli.cwd / "via-fd3.jsonl"))
    assert result.returncode == 0, result.stderr
    lines = (cli.cwd / "via-fd3.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(TREE_RESULTS)


def test_a_closed_standard_stream_is_not_replaced_by_the_residents_socket(
    warm: Warm, csv_dir: Path, tmp_path: Path
) -> None:
    _started(warm)
    cli = warm.cli
    for redirect, args, code in (
        (">&-", f'run "{csv_dir}" --task csv-header', 0),
        ("2>&-", f'run "{tmp_path / "missing"}" --task csv-header', 2),
    ):
        result = _in_shell(cli, f'"{PRAVAH}" {args} {redirect}')
        assert result.returncode == code, (redirect, result)
        assert "resident" not in result.stdout + result.stderr


def test_usage_names_the_command_as_invoked(warm: Warm) -> None:
    _started(warm)
    result = warm.cli.run("run")
    assert result.returncode == 2
    assert "Usage: pravah run [OPTIONS] SOURCE" in result.stderr, result.stderr


def test_a_signal_ignored_by_the_caller_is_ignored_by_its_command(
    warm: Warm, large_tree: Path
) -> None:
    """A script's `cmd &` starts it with SIGINT and SIGQUIT ignored, nohup with
    SIGHUP ignored. pravah handles none of SIGQUIT: ignored, it changes nothing."""
    _started(warm)
    process = _running(warm.cli, large_tree, "sh", "-c", 'trap "" QUIT; exec "$@"', "sh")
    process.send_signal(signal.SIGQUIT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert json.loads(out)["status"] == "completed"


def test_priority_and_cpus_are_the_callers(warm: Warm, large_tree: Path) -> None:
    """`nice -n 7 taskset -c 0 pravah run ...` (a nightly job kept out of the way):
    a resident started without them must not run it."""
    _started(warm)
    process = _running(warm.cli, large_tree, "nice", "-n", "7", "taskset", "-c", "0")
    try:
        (engine,) = _engines_of(warm.cli)
        stat = Path(f"/proc/{engine}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[16]) == 7  # field 19, nice
        assert os.sched_getaffinity(engine) == {0}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_a_sandboxed_caller_runs_its_command_itself(warm: Warm, large_tree: Path) -> None:
    """no_new_privs (and with it Landlock) or a seccomp filter cannot be handed
    on: the command runs in the caller's own process, and no resident starts."""
    resident = _started(warm)
    process = _running(warm.cli, large_tree, "setpriv", "--no-new-privs")
    try:
        (engine,) = _engines_of(warm.cli)
        assert _parent(engine) == process.pid
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert warm.residents() == [resident]


def test_a_killed_resident_leaves_its_command_to_finish_and_report(
    warm: Warm, large_tree: Path
) -> None:
    resident = _started(warm)
    process = _running(warm.cli, large_tree)
    os.kill(resident, signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert json.loads(out)["status"] == "completed"


def test_a_signal_the_moment_a_command_starts_never_reaches_the_residents_handlers(
    warm: Warm,
) -> None:
    """A caller passes on a signal as soon as it hears its child's pid. The child
    must meet it with a fresh interpreter's dispositions, not the resident's
    (whose SIGTERM handler stopped the resident's loop from inside the child)."""
    _started(warm)
    address = socket_address(warm.key())
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn, open(os.devnull) as null:
            conn.connect(address)
            body = json.dumps(
                {
                    "protocol": PROTOCOL,
                    "argv": [str(PRAVAH), "--version"],
                    "env": dict(warm.cli.env),
                    "umask": 0o022,
                    "fds": [0, 1, 2],
                    "ignored": [],
                }
            ).encode()
            fd = null.fileno()
            cwd = os.open(".", os.O_PATH)
            socket.send_fds(conn, [HEADER.pack(len(body))], [fd, fd, fd, cwd])
            os.close(cwd)
            conn.sendall(body)
            with conn.makefile("rb") as reader:  # closed here, or the socket is left open
                pid = json.loads(reader.readline())["pid"]
                with contextlib.suppress(ProcessLookupError):  # --version may be done already
                    os.kill(pid, signal.SIGTERM)
                answers = [json.loads(line) for line in reader]
        assert {"exit": -signal.SIGTERM} in answers or {"exit": 0} in answers, answers
    result = warm.cli.run("--version")  # the resident still serves
    assert result.returncode == 0 and len(warm.residents()) == 1
