"""Settings: environment names, URL rewriting, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pravah.settings import Settings, default_state_dir, normalize_database_url
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_is_rewritten_to_async_drivers(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


def test_database_url_from_standard_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://me@db/pravah")
    assert Settings().database_url == "postgresql+asyncpg://me@db/pravah"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u:secret@db/x", "must name PostgreSQL"),
        ("mongodb+srv://db", "must name PostgreSQL"),
        ("/var/lib/pravah.db", "must name PostgreSQL"),
        ("postgresql://u:secret@db:notaport/x", "not a valid URL: Port could not be cast"),
        ("postgres://u:secret@[::1/x", "not a valid URL: Invalid IPv6 URL"),
    ],
)
def test_a_database_url_pravah_cannot_use_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ValidationError, match=reason) as refused:
        Settings()
    # What the CLI prints (format_validation_error) is the message, without the password.
    assert "secret" not in " ".join(e["msg"] for e in refused.value.errors())


def test_default_database_is_sqlite_in_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PRAVAH_STATE_DIR", str(tmp_path / "st"))
    settings = Settings()
    assert settings.state_dir == tmp_path / "st"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'st' / 'pravah.db'}"
    assert settings.is_sqlite


def test_state_dir_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "pravah"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "pravah"


def test_engine_urls_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRAVAH_ENGINE_URLS", "a:1, b:2,,")
    assert Settings().engine_urls == ["a:1", "b:2"]
    monkeypatch.setenv("PRAVAH_ENGINE_URLS", "")
    assert Settings().engine_urls == []


def test_log_level_standard_name_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="invalid log level"):
        Settings()


def test_run_worker_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRAVAH_RUN_WORKER", "false")
    assert Settings().run_worker is False


def test_results_retention_reads_durations_and_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    monkeypatch.delenv("PRAVAH_RESULTS_RETENTION", raising=False)
    assert Settings(state_dir=tmp_path).results_retention == timedelta(days=30)
    for text, expected in (("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2))):
        monkeypatch.setenv("PRAVAH_RESULTS_RETENTION", text)
        assert Settings(state_dir=tmp_path).results_retention == expected
    monkeypatch.setenv("PRAVAH_RESULTS_RETENTION", "never")
    assert Settings(state_dir=tmp_path).results_retention is None
    for bad, needle in (("soon", "give a duration such as 30d"), ("0d", "longer than zero")):
        monkeypatch.setenv("PRAVAH_RESULTS_RETENTION", bad)
        with pytest.raises(ValidationError, match=needle):
            Settings(state_dir=tmp_path)
