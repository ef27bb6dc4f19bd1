"""deploy/docker-entrypoint.sh run on the host, as the image runs it.

No container engine here, so the image's process logic is tested directly:
the combined mode (engine, health wait, API with worker, signal forwarding,
clean exit, failure when a child dies) and the single roles the compose file
and the Kubernetes manifests use (engine x2, migrate, serve without worker,
worker) as separate processes sharing PostgreSQL, which is the scaled layout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "deploy" / "docker-entrypoint.sh"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Role:
    """One `docker-entrypoint.sh ROLE` process in its own session (like a container)."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                ["bash", str(ENTRYPOINT), role],
                env=env,
                cwd=log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_until(self, ready: object, timeout: float = 60.0) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.2)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM (what `docker stop` and Kubernetes send), then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ignored SIGTERM for {timeout} s:\n{self.output()}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def group_alive(self) -> bool:
        """Whether any process of this role's session (its children too) remains."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.fixture
def base_env(tmp_path: Path, engine_bin: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PRAVAH_")}
    keep.pop("DATABASE_URL", None)
    return {
        **keep,
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "PRAVAH_ENGINE_BIN": str(engine_bin),
        "PRAVAH_HOST": "127.0.0.1",
        "PRAVAH_ADMIN_KEY": ADMIN_KEY,
        "PRAVAH_STATE_DIR": str(tmp_path / "state"),
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def roles() -> Iterator[list[Role]]:
    started: list[Role] = []
    yield started
    for role in started:
        role.kill()


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for n in range(30):
        folder = root / f"d{n % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n}.csv").write_text("id,name\n1,a\n" if n % 2 else "x;y\n")
    return root


ADMIN_KEY = "pvh-test-admin-0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def run_job(url: str, source: Path, timeout: float = 60.0) -> dict[str, object]:
    created = httpx.post(
        f"{url}/jobs", json={"source": str(source), "task": "csv-header"}, headers=AUTH
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, object] = httpx.get(f"{url}/jobs/{job_id}", headers=AUTH).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {timeout} s")


def test_combined_mode_runs_jobs_and_stops_cleanly_on_sigterm(
    tmp_path: Path, base_env: dict[str, str], roles: list[Role], csv_folder: Path
) -> None:
    engine_port, api_port = free_port(), free_port()
    env = {
        **base_env,
        "PRAVAH_ENGINE_LISTEN": f"127.0.0.1:{engine_port}",
        "PRAVAH_PORT": str(api_port),
    }
    combined = Role("combined", env, tmp_path / "combined.log")
    roles.append(combined)
    url = f"http://127.0.0.1:{api_port}"
    combined.wait_until(lambda: ready(url))
    job = run_job(url, csv_folder)
    assert job["status"] == "completed", job
    # The image's default health check passes against this process.
    health = subprocess.run(
        [sys.executable, "-m", "pravah.healthcheck"], env=env, capture_output=True, check=False
    )
    assert health.returncode == 0, health.stderr

    assert combined.terminate() == 0, combined.output()
    log = combined.output()
    assert "stopping the API, then the engine" in log
    assert log.index("api exited with status 0") < log.index("engine exited with status 0")
    assert not combined.group_alive()
    assert not port_open(api_port) and not port_open(engine_port)


def test_combined_mode_fails_fast_when_the_engine_cannot_start(
    tmp_path: Path, base_env: dict[str, str], roles: list[Role]
) -> None:
    env = {**base_env, "PRAVAH_ENGINE_BIN": "/bin/false", "PRAVAH_PORT": str(free_port())}
    combined = Role("combined", env, tmp_path / "combined.log")
    roles.append(combined)
    assert combined.process.wait(30) == 1
    assert "engine exited with status 1 before it became healthy" in combined.output()


def test_combined_mode_exits_nonzero_and_stops_the_api_when_the_engine_dies(
    tmp_path: Path, base_env: dict[str, str], roles: list[Role]
) -> None:
    engine_port, api_port = free_port(), free_port()
    env = {
        **base_env,
        "PRAVAH_ENGINE_LISTEN": f"127.0.0.1:{engine_port}",
        "PRAVAH_PORT": str(api_port),
    }
    combined = Role("combined", env, tmp_path / "combined.log")
    roles.append(combined)
    combined.wait_until(lambda: ready(f"http://127.0.0.1:{api_port}"))
    engine_pid = int(combined.output().split("engine started (pid ", 1)[1].split(")", 1)[0])
    os.kill(engine_pid, signal.SIGKILL)
    assert combined.process.wait(40) != 0
    assert "engine exited unexpectedly" in combined.output()
    assert not combined.group_alive()


@pytest.mark.postgres
def test_single_roles_make_a_scaled_deployment_on_postgresql(
    tmp_path: Path,
    base_env: dict[str, str],
    roles: list[Role],
    csv_folder: Path,
    pg_database_url: str,
) -> None:
    env = {**base_env, "DATABASE_URL": pg_database_url}
    engine_ports = [free_port(), free_port()]
    engines = []
    for n, port in enumerate(engine_ports):
        engine_env = {**env, "PRAVAH_ENGINE_LISTEN": f"127.0.0.1:{port}"}
        engines.append(Role("engine", engine_env, tmp_path / f"engine-{n}.log"))
    roles.extend(engines)

    migrate = subprocess.run(
        ["bash", str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr

    urls = ",".join(f"127.0.0.1:{p}" for p in engine_ports)
    for engine, port in zip(engines, engine_ports, strict=True):
        probe = [sys.executable, "-m", "pravah.healthcheck", "-q", f"grpc://127.0.0.1:{port}"]
        engine.wait_until(lambda probe=probe: subprocess.run(probe, check=False).returncode == 0)
    api_port = free_port()
    api_env = {
        **env,
        "PRAVAH_ENGINE_URLS": urls,
        "PRAVAH_PORT": str(api_port),
        "PRAVAH_RUN_WORKER": "false",
    }
    api = Role("serve", api_env, tmp_path / "api.log")
    worker = Role("worker", {**env, "PRAVAH_ENGINE_URLS": urls}, tmp_path / "worker.log")
    roles.extend([api, worker])
    url = f"http://127.0.0.1:{api_port}"
    api.wait_until(lambda: ready(url))

    # Only the worker process runs jobs: the API has none in-process.
    jobs = [run_job(url, csv_folder) for _ in range(2)]
    assert [j["status"] for j in jobs] == ["completed", "completed"]

    for role in (api, worker, *engines):
        assert role.terminate() == 0, role.output()
        assert not role.group_alive()
