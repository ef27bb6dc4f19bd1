"""Finding and running a local `pravah-engine` child process.

Why: the embedded default ("no configuration at all") needs an engine on a
free local port that lives exactly as long as the API or CLI command. The
engine binds port 0 and prints one line, `listening on <ip:port>`, so there is
no port race. The child is stopped with SIGTERM (clean shutdown) and killed
only if it ignores that for the grace period. Its stderr (JSON logs) is
drained continuously - a full pipe would block the engine - and the last lines
are kept so a failed start can say why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from types import TracebackType

from pravah.errors import EngineBinaryNotFoundError, EngineUnavailableError
from pravah.log import get_logger
from pravah.settings import Settings
from pravah.telemetry import engine_child_env

ENGINE_NAME = "pravah-engine"
_LISTENING = "listening on "
_STDERR_TAIL_LINES = 30

log = get_logger(__name__)


def repo_root() -> Path:
    """The source checkout this package lives in (control_plane/pravah/ -> repo)."""
    return Path(__file__).resolve().parent.parent.parent


def _in_checkout() -> bool:
    """True when this package runs from a source checkout (editable install, tests)."""
    return (repo_root() / "Cargo.toml").is_file()


def installed_bin_dirs() -> list[Path]:
    """Where an installed wheel puts pravah-engine, most specific first.

    The wheel ships the engine as a script (maturin "bin" bindings), so it lands
    in the scripts folder of whatever scheme pip or uv used - as astral-sh/uv's
    `find_uv_bin()` reasons: the running environment's scripts folder, the
    folder of the running interpreter (a venv used without activation), the
    user scheme (`pip install --user`), and the folders next to the package for
    `pip install --target DIR` (DIR/bin) and `--prefix P` (P/bin).
    """
    package = Path(__file__).resolve().parent
    dirs = [
        sysconfig.get_path("scripts"),
        str(Path(sys.executable).parent),
        sysconfig.get_path("scripts", scheme=f"{os.name}_user"),
        str(package.parent / "bin"),
        str(package.parent.parent.parent.parent / "bin"),
    ]
    unique: list[Path] = []
    for entry in dirs:
        path = Path(entry)
        if path not in unique:
            unique.append(path)
    return unique


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_engine_bin(settings: Settings | None = None) -> Path:
    """Locate the engine executable.

    Order: PRAVAH_ENGINE_BIN (settings.engine_bin); in a source checkout,
    target/release then target/debug (the freshest build beats the copy an
    editable install made); the folders an installed wheel puts it in
    (`installed_bin_dirs()`); then `pravah-engine` on PATH. Raises
    EngineBinaryNotFoundError listing every path tried.
    """
    tried: list[str] = []
    explicit = settings.engine_bin if settings is not None else None
    if explicit is None and os.environ.get("PRAVAH_ENGINE_BIN"):
        explicit = Path(os.environ["PRAVAH_ENGINE_BIN"])
    if explicit is not None:
        path = explicit.expanduser()
        if _executable(path):
            return path
        # An explicit setting that is wrong is an error, not a hint to look elsewhere.
        raise EngineBinaryNotFoundError(
            f"PRAVAH_ENGINE_BIN is set to {str(path)!r}, but that is not an executable file; "
            "build the engine with `cargo build -p pravah-engine` or fix the setting"
        )
    candidates: list[Path] = []
    if _in_checkout():
        candidates += [repo_root() / "target" / p / ENGINE_NAME for p in ("release", "debug")]
    candidates += [directory / ENGINE_NAME for directory in installed_bin_dirs()]
    for candidate in candidates:
        tried.append(str(candidate))
        if _executable(candidate):
            return candidate
    on_path = shutil.which(ENGINE_NAME)
    tried.append(f"{ENGINE_NAME} on PATH")
    if on_path:
        return Path(on_path)
    raise EngineBinaryNotFoundError(
        f"could not find the {ENGINE_NAME} executable; tried: {', '.join(tried)}. "
        "Reinstall the pravah wheel (it ships the engine), build it with "
        "`cargo build -p pravah-engine`, set PRAVAH_ENGINE_BIN, "
        "or point PRAVAH_ENGINE_URLS at running engines"
    )


def _engine_args(binary: Path) -> list[str]:
    return [str(binary), "--listen", "127.0.0.1:0"]


def _parse_listening(line: str) -> str | None:
    line = line.strip()
    if line.startswith(_LISTENING):
        return line[len(_LISTENING) :].strip()
    return None


# The engine needs none of the control plane's secrets; a child process
# should not hold what it does not use.
_SECRET_VARS = ("PRAVAH_ADMIN_KEY", "PRAVAH_API_KEY", "DATABASE_URL", "PRAVAH_DATABASE_URL")


def sandboxed_env(env: dict[str, str] | None, settings: Settings) -> dict[str, str]:
    """The local engine's environment: ours without secrets, with its allowed roots.

    The engine checks every path against PRAVAH_ALLOWED_ROOTS; a local engine
    also writes chunks and results into job workspaces under the state folder
    and reads uploads there, so that folder is added when roots are set.

    S3: the engine reads the storage credentials and endpoint from the
    standard variables itself, so the settings' values (which may come from
    a .env file rather than the environment) are passed to it by those
    names, with the allowed buckets. This is the only place they leave the
    settings; they are never logged or stored.
    """
    child = {k: v for k, v in (os.environ if env is None else env).items()}
    for name in _SECRET_VARS:
        child.pop(name, None)
    for name, secret in (
        ("AWS_ACCESS_KEY_ID", settings.aws_access_key_id),
        ("AWS_SECRET_ACCESS_KEY", settings.aws_secret_access_key),
        ("AWS_SESSION_TOKEN", settings.aws_session_token),
    ):
        if secret is not None:
            child[name] = secret.get_secret_value()
    if settings.aws_region:
        child["AWS_REGION"] = settings.aws_region
    if settings.s3_endpoint_url:
        child["S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.allowed_buckets:
        child["PRAVAH_ALLOWED_BUCKETS"] = ",".join(settings.allowed_buckets)
    if settings.allowed_roots:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        roots = [*settings.allowed_roots, settings.state_dir]
        child["PRAVAH_ALLOWED_ROOTS"] = ",".join(str(r) for r in roots)
    return child


class LocalEngine:
    """Async context manager running `pravah-engine --listen 127.0.0.1:0`.

    `async with LocalEngine(path) as url:` yields "127.0.0.1:<port>".
    """

    def __init__(
        self,
        binary: Path,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.env = env
        self.url: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._drainers: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalEngine:
        """A LocalEngine for the binary `find_engine_bin(settings)` finds."""
        return cls(
            find_engine_bin(settings),
            start_timeout=settings.engine_start_timeout,
            stop_timeout=settings.engine_stop_timeout,
            env=sandboxed_env(engine_child_env(), settings),
        )

    @property
    def stderr_tail(self) -> str:
        """The engine's last stderr lines (for error messages)."""
        return "\n".join(self._stderr_tail)

    async def start(self) -> str:
        """Start the engine and return its address once it listens."""
        await self.spawn()
        return await self.ready()

    async def spawn(self) -> None:
        """Start the engine process without waiting for it to listen (see ready()).

        `pravah run` spawns first and asks for the address later, so the
        engine's start-up overlaps the control plane's own imports.
        """
        # The engine ends when this process dies, however it dies (see the
        # engine's exit_with_parent): spawn() runs on the thread that lives
        # as long as the process, the one the kernel watches.
        env = {**(self.env if self.env is not None else os.environ)}
        env["PRAVAH_ENGINE_PARENT_PID"] = str(os.getpid())
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *_engine_args(self.binary),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # a Ctrl-C on the terminal reaches us, not the engine
            )
        except OSError as exc:
            raise EngineUnavailableError(f"could not start {self.binary}: {exc}") from exc
        assert self._proc.stderr is not None
        self._drainers.append(asyncio.create_task(self._drain_stderr(self._proc.stderr)))

    async def ready(self) -> str:
        """The spawned engine's address, once it reports `listening on` (stopped on failure)."""
        if self.url is not None:
            return self.url
        assert self._proc is not None and self._proc.stdout is not None, "spawn() first"
        try:
            url = await asyncio.wait_for(
                self._read_listening(self._proc.stdout), self.start_timeout
            )
        except TimeoutError:
            await self.stop()
            raise EngineUnavailableError(
                f"{self.binary} did not report `listening on` within {self.start_timeout:g} s; "
                f"its last stderr lines:\n{self.stderr_tail or '(none)'}"
            ) from None
        except EngineUnavailableError:
            await self.stop()
            raise
        self._drainers.append(asyncio.create_task(self._drain_stdout(self._proc.stdout)))
        self.url = url
        log.info("engine started", url=url, pid=self._proc.pid, binary=str(self.binary))
        return url

    async def _read_listening(self, stdout: asyncio.StreamReader) -> str:
        while True:
            raw = await stdout.readline()
            if not raw:
                assert self._proc is not None
                code = await self._proc.wait()
                await asyncio.sleep(0.05)  # let the stderr drainer catch the last lines
                raise EngineUnavailableError(
                    f"{self.binary} exited with code {code} before listening; "
                    f"its last stderr lines:\n{self.stderr_tail or '(none)'}"
                )
            url = _parse_listening(raw.decode("utf-8", "replace"))
            if url is not None:
                return url

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    async def _drain_stdout(self, stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self) -> int | None:
        """SIGTERM the engine, SIGKILL after stop_timeout; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("engine ignored SIGTERM; killing it", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._drainers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 1.0) if not task.done() else None
        self._drainers.clear()
        log.info("engine stopped", pid=proc.pid, returncode=proc.returncode)
        return proc.returncode

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class LocalEngineSync:
    """The same as LocalEngine for synchronous code (CLI helpers, test fixtures).

    `with LocalEngineSync(path) as url:`; reader threads drain its pipes.
    """

    def __init__(
        self,
        binary: Path,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.env = env
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._url_ready = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def stderr_tail(self) -> str:
        """The engine's last stderr lines."""
        return "\n".join(self._stderr_tail)

    @property
    def pid(self) -> int | None:
        """The engine's process id while it runs (fault-injection tests kill it)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Start the engine and return its address once it listens."""
        try:
            self._proc = subprocess.Popen(
                _engine_args(self.binary),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineUnavailableError(f"could not start {self.binary}: {exc}") from exc
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr

        def read_stdout() -> None:
            for raw in stdout:
                url = _parse_listening(raw.decode("utf-8", "replace"))
                if url is not None and self.url is None:
                    self.url = url
                    self._url_ready.set()
            self._url_ready.set()  # EOF: wake the starter so it can report the exit

        def read_stderr() -> None:
            for raw in stderr:
                self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

        for target in (read_stdout, read_stderr):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + self.start_timeout
        while not self._url_ready.wait(0.05):
            if time.monotonic() > deadline:
                self.stop()
                raise EngineUnavailableError(
                    f"{self.binary} did not report `listening on` within "
                    f"{self.start_timeout:g} s; its last stderr lines:\n"
                    f"{self.stderr_tail or '(none)'}"
                )
        if self.url is None:
            code = proc.wait()
            self._threads[1].join(1.0)
            raise EngineUnavailableError(
                f"{self.binary} exited with code {code} before listening; "
                f"its last stderr lines:\n{self.stderr_tail or '(none)'}"
            )
        return self.url

    def stop(self) -> int | None:
        """SIGTERM the engine, SIGKILL after stop_timeout; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(1.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return proc.returncode

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
