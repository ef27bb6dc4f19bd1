"""Which resident may serve a command (pravah.cli.warm_start's key), and which commands go."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
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
