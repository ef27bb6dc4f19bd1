"""find_engine_bin and the launcher's failure messages (no real engine needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pravah import engine_launcher
from pravah.engine_launcher import LocalEngine, LocalEngineSync, find_engine_bin
from pravah.errors import EngineBinaryNotFoundError, EngineUnavailableError
from pravah.settings import Settings


def _fake_checkout(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make `root` look like the source checkout the package runs from."""
    (root / "Cargo.toml").write_text("[workspace]\n")
    monkeypatch.setattr(engine_launcher, "repo_root", lambda: root)


def test_missing_engine_lists_every_path_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PRAVAH_ENGINE_BIN", raising=False)
    _fake_checkout(monkeypatch, tmp_path)
    monkeypatch.setattr(engine_launcher, "installed_bin_dirs", lambda: [tmp_path / "scripts"])
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(EngineBinaryNotFoundError) as info:
        find_engine_bin(Settings(engine_bin=None))
    message = str(info.value)
    assert str(tmp_path / "scripts" / "pravah-engine") in message
    assert str(tmp_path / "target" / "release" / "pravah-engine") in message
    assert str(tmp_path / "target" / "debug" / "pravah-engine") in message
    assert "pravah-engine on PATH" in message
    assert "cargo build -p pravah-engine" in message


def test_wrong_explicit_engine_bin_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EngineBinaryNotFoundError, match="PRAVAH_ENGINE_BIN is set to"):
        find_engine_bin(Settings(engine_bin=tmp_path / "nope"))


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-engine"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_explicit_engine_bin_wins(tmp_path: Path) -> None:
    fake = _script(tmp_path, "exit 0\n")
    assert find_engine_bin(Settings(engine_bin=fake)) == fake


def test_release_build_is_preferred_over_debug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PRAVAH_ENGINE_BIN", raising=False)
    _fake_checkout(monkeypatch, tmp_path)
    for profile in ("release", "debug"):
        (tmp_path / "target" / profile).mkdir(parents=True)
        _script(tmp_path / "target" / profile, "exit 0\n").rename(
            tmp_path / "target" / profile / "pravah-engine"
        )
    assert find_engine_bin(Settings()) == tmp_path / "target" / "release" / "pravah-engine"


def test_installed_wheel_finds_the_bundled_engine_without_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An installed wheel: no checkout around the package, the engine sits in
    # the environment's scripts folder, PATH knows nothing.
    monkeypatch.delenv("PRAVAH_ENGINE_BIN", raising=False)
    monkeypatch.setattr(engine_launcher, "repo_root", lambda: tmp_path / "site-packages")
    scripts = tmp_path / "venv" / "bin"
    scripts.mkdir(parents=True)
    engine = _script(scripts, "exit 0\n").rename(scripts / "pravah-engine")
    monkeypatch.setattr(engine_launcher, "installed_bin_dirs", lambda: [tmp_path / "x", scripts])
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert find_engine_bin(Settings()) == engine


def test_installed_bin_dirs_start_with_this_environments_scripts_folder() -> None:
    import sysconfig

    dirs = engine_launcher.installed_bin_dirs()
    assert dirs[0] == Path(sysconfig.get_path("scripts"))
    assert len(dirs) == len(set(dirs))


async def test_engine_dying_before_listening_reports_stderr(tmp_path: Path) -> None:
    fake = _script(tmp_path, 'echo "boom: cannot bind" >&2\nexit 3\n')
    with pytest.raises(EngineUnavailableError) as info:
        async with LocalEngine(fake):
            pass
    assert "exited with code 3" in str(info.value)
    assert "boom: cannot bind" in str(info.value)


async def test_async_launcher_reads_url_and_stops_with_sigterm(tmp_path: Path) -> None:
    fake = _script(
        tmp_path,
        "trap 'exit 0' TERM\necho 'listening on 127.0.0.1:4242'\nwhile true; do sleep 0.05; done\n",
    )
    engine = LocalEngine(fake, stop_timeout=5)
    async with engine as url:
        assert url == "127.0.0.1:4242"
    assert engine._proc is not None
    assert engine._proc.returncode == 0


def test_sync_launcher_times_out_with_clear_error(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo starting >&2\nexec sleep 30\n")
    engine = LocalEngineSync(fake, start_timeout=0.5, stop_timeout=1)
    with pytest.raises(EngineUnavailableError, match=r"did not report `listening on`"):
        engine.start()


def test_sync_launcher_kills_engine_ignoring_sigterm(tmp_path: Path) -> None:
    fake = _script(
        tmp_path,
        "trap '' TERM\necho 'listening on 127.0.0.1:1'\nwhile true; do sleep 0.05; done\n",
    )
    engine = LocalEngineSync(fake, stop_timeout=0.5)
    with engine as url:
        assert url == "127.0.0.1:1"
    assert engine._proc is not None
    assert engine._proc.returncode is not None
    assert os.name == "posix"


def test_local_engine_env_has_no_secrets_and_gets_the_state_dir_as_a_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pravah.engine_launcher import sandboxed_env
    from pravah.settings import Settings

    monkeypatch.setenv("PRAVAH_ADMIN_KEY", "s" * 40)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@h/db")
    settings = Settings(state_dir=tmp_path / "state", allowed_roots=[tmp_path / "data"])
    env = sandboxed_env(None, settings)
    assert "PRAVAH_ADMIN_KEY" not in env and "DATABASE_URL" not in env
    assert env["PRAVAH_ALLOWED_ROOTS"] == f"{tmp_path / 'data'},{tmp_path / 'state'}"


def test_local_engine_gets_the_storage_settings_by_their_standard_names(
    tmp_path: Path,
) -> None:
    """Settings read from a .env file reach the engine, which reads only its environment."""
    from pravah.engine_launcher import sandboxed_env

    env_file = tmp_path / ".env"
    env_file.write_text(
        "AWS_ACCESS_KEY_ID=AKIAFROMFILE\nAWS_SECRET_ACCESS_KEY=from-file-secret\n"
        "AWS_REGION=eu-west-3\nS3_ENDPOINT_URL=http://127.0.0.1:9000\n"
        "PRAVAH_ALLOWED_BUCKETS=raw,derived\n"
    )
    settings = Settings(_env_file=env_file, state_dir=tmp_path / "state")  # type: ignore[call-arg]
    env = sandboxed_env({}, settings)
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAFROMFILE"
    assert env["AWS_SECRET_ACCESS_KEY"] == "from-file-secret"
    assert env["AWS_REGION"] == "eu-west-3"
    assert env["S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["PRAVAH_ALLOWED_BUCKETS"] == "raw,derived"
    assert "AWS_SESSION_TOKEN" not in env
    # The secret stays a SecretStr everywhere else: it never prints.
    assert "from-file-secret" not in repr(settings)
