"""Which resident may serve a command (pravah.cli.warm_start's key), and which commands go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pravah.cli import warm_start
from pravah.cli.warm_start import resident_key, wanted


def _key() -> str:
    return resident_key.__wrapped__()  # uncached: the environment changes under it


def test_settings_read_while_a_command_runs_share_a_resident(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = _key()
    for name, value in (
        ("PRAVAH_STATE_DIR", "/elsewhere"),
        ("DATABASE_URL", "postgresql://db/x"),
        ("AWS_ACCESS_KEY_ID", "AKIA"),
        ("COLUMNS", "80"),
        ("TMPDIR", "/var/tmp"),  # a child finds its temporary folder again
        ("PRAVAH_WARM_START", "on"),  # the same as unset
        ("SOME_UNRELATED_VARIABLE", "1"),
    ):
        monkeypatch.setenv(name, value)
    assert _key() == base


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYTHONHASHSEED", "7"),  # the interpreter's start-up
        ("LC_ALL", "C"),  # standard streams' encoding
        ("HOME", "/nonexistent-home"),  # the user's site folder
        ("TYPER_USE_RICH", "0"),  # read by typer when imported
        ("OTEL_PROPAGATORS", "b3"),  # read by OpenTelemetry when imported
        ("NO_COLOR", "1"),  # read by structlog when imported
        ("PRAVAH_WARM_IDLE", "9"),  # the resident's own setting
    ],
)
def test_what_is_read_before_a_command_starts_needs_its_own_resident(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    base = _key()
    monkeypatch.setenv(name, value)
    assert _key() != base


def test_installing_a_package_needs_a_new_resident(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    before = _key()
    (site / "newpkg").mkdir()  # what an install or upgrade does to its folder
    assert _key() != before


def test_long_lived_commands_and_warm_start_off_run_cold() -> None:
    assert wanted(["pravah", "run", "x"], {})
    assert wanted(["pravah", "--version"], {})
    for command in ("serve", "engine", "worker"):
        assert not wanted(["pravah", command], {})
    for off in ("off", "0", "false", "OFF "):
        assert not wanted(["pravah", "run", "x"], {"PRAVAH_WARM_START": off})


def test_another_root_directory_needs_its_own_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chroot (even one with the same files bind-mounted) is another `/`."""
    base = _key()
    real_stat = os.stat

    def chrooted(path: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_stat(path, *args, **kwargs)
        if path == "/":
            return os.stat_result((info.st_mode, info.st_ino + 1, *tuple(info)[2:]))
        return info

    monkeypatch.setattr(warm_start.os, "stat", chrooted)
    assert _key() != base


def test_interpreter_options_need_their_own_resident() -> None:
    """`python3 -X utf8=0 pravah ...` must not be served by a UTF-8-mode resident."""
    probe = "from pravah.cli.warm_start import resident_key; print(resident_key())"
    keys = {
        subprocess.run(
            [sys.executable, *flags, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        for flags in ([], ["-X", "utf8=0"], ["-X", "dev"], ["-O"])
    }
    assert len(keys) == 4


def test_a_background_job_of_a_terminal_runs_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal stops a background job that reads it; a resident's child it cannot."""
    monkeypatch.setattr(warm_start.os, "isatty", lambda fd: fd == 0)
    monkeypatch.setattr(warm_start.os, "tcgetpgrp", lambda fd: os.getpgrp())
    assert wanted(["pravah", "run", "x"], {})  # in the foreground
    monkeypatch.setattr(warm_start.os, "tcgetpgrp", lambda fd: os.getpgrp() + 1)
    assert not wanted(["pravah", "run", "x"], {})


def test_without_proc_a_command_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container without /proc mounted: no crash, the command runs cold."""

    def no_proc(path: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(warm_start.os, "listdir", no_proc)
    assert warm_start.handed_over(["pravah", "--version"]) is None
