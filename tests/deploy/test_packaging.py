"""The wheel: one version everywhere, the engine inside, found with no PATH help.

The suite builds the wheel with the dev profile (maturin reuses target/debug:
seconds) rather than the release profile of `make dist` (fat LTO: minutes);
both go through the same pyproject configuration. `make dist-check` installs
the release wheel with its dependencies from the index.

Marked `serial`: cargo, even with nothing to rebuild, removes and links
again target/debug/pravah-engine, so a test on another pytest-xdist worker
starting the engine in that instant finds no binary.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pravah
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.serial


def cargo_version() -> str:
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    return str(cargo["workspace"]["package"]["version"])


def test_one_version_for_cargo_python_cli_and_engine(engine_url: str) -> None:
    from pravah.engine_client import EngineClient

    async def engine_version() -> str:
        async with EngineClient(engine_url) as client:
            return (await client.capabilities()).engine_version

    expected = cargo_version()
    assert version("pravah") == pravah.__version__ == expected
    cli = subprocess.run(
        [VENV_BIN / "pravah", "--version"], capture_output=True, text=True, check=True
    )
    assert cli.stdout.strip() == f"pravah {expected}"
    assert asyncio.run(engine_version()) == expected
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [VENV_BIN / "maturin", "build", "--profile", "dev", "--locked", "--out", out],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("pravah-*.whl")
    return built


def test_wheel_holds_the_package_stubs_cli_and_engine(wheel: Path) -> None:
    assert wheel.name.startswith(f"pravah-{cargo_version()}-py3-none-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        scripts = f"pravah-{cargo_version()}.data/scripts"
        assert {f"{scripts}/pravah", f"{scripts}/pravah-engine"} <= names
        assert archive.read(f"{scripts}/pravah").startswith(b"#!python\n")
    for module in (
        "pravah/cli/app.py",
        "pravah/engine/v1/engine_pb2.py",
        "pravah/engine/v1/engine_pb2_grpc.py",
        "pravah/migrations/versions/0001_initial.py",
        "pravah/sql/queue.sql",
        "pravah/py.typed",
    ):
        assert module in names
    assert not [n for n in names if "__pycache__" in n]


def test_installed_wheel_runs_a_job_with_no_path_help(wheel: Path, tmp_path: Path) -> None:
    # A fresh venv with only the wheel installed; its dependencies come from
    # this venv's site-packages through a .pth line (the dist-check target
    # installs them from the index instead). The editable install of this
    # checkout stays invisible: a plain path in a .pth does not run the .pth
    # files found there.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = Path(
        subprocess.run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            wheel,
        ],
        check=True,
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("id,name\n1,x\n")
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "PRAVAH_STATE_DIR": str(tmp_path / "state"),
    }
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import pravah, pravah.engine_launcher as launcher; "
            "print(pravah.__file__); print(launcher.find_engine_bin())",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(site))
    assert where[1] == str(venv / "bin" / "pravah-engine")
    run = subprocess.run(
        [venv / "bin" / "pravah", "run", data, "--task", "csv-header", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"status": "completed"' in run.stdout
    assert os.access(venv / "bin" / "pravah-engine", os.X_OK)
