"""Unit tests of the command table: input errors are caught before any process starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pravah import __version__
from pravah.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


def test_version_flag_prints_the_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"pravah {__version__}"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--option", "novalue"], "--option expects KEY=VALUE"),
        (["--min-size", "12XB"], "--min-size: invalid size '12XB'"),
        (["--min-size", "2MB", "--max-size", "1MB"], "larger than --max-size"),
    ],
)
def test_bad_flags_exit_2_before_any_engine_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], needle: str
) -> None:
    # An engine that cannot exist: reaching it would be a different error.
    monkeypatch.setenv("PRAVAH_ENGINE_BIN", str(tmp_path / "no-engine"))
    monkeypatch.setenv("PRAVAH_STATE_DIR", str(tmp_path / "state"))
    result = runner.invoke(app, ["run", str(tmp_path), "--task", "csv-header", *extra])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())
    assert not (tmp_path / "state").exists()  # nothing stored


def test_missing_source_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nope"), "--task", "csv-header"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_retry_without_failed_says_how_to_call_it_before_asking_a_server() -> None:
    # Port 9 (discard) answers nobody: asking it would be exit status 1.
    result = runner.invoke(app, ["retry", "abc", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "add --failed: `pravah retry abc --failed` starts a new job" in text, text


def test_unreachable_server_exits_1_naming_the_url() -> None:
    result = runner.invoke(app, ["jobs", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the Pravah server at http://127.0.0.1:9" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--server", "127.0.0.1:8000"], "must be an http:// or https:// URL"),
        (["--server", "ftp://host"], "must be an http:// or https:// URL"),
        (["--server", "http://[::1"], "is not a valid URL: Invalid IPv6 URL"),
        (["--server", "http://host:99999"], "is not a valid URL: Port out of range"),
        (["--server", "https://127.0.0.1:9", "--ca-file", "{missing}"], "cannot be read"),
        (["--server", "https://127.0.0.1:9", "--ca-file", "{not_pem}"], "holds no PEM certificate"),
    ],
    ids=["no-scheme", "ftp", "broken-ipv6", "port-out-of-range", "ca-missing", "ca-not-pem"],
)
def test_a_bad_server_url_or_ca_file_exits_2_naming_it(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    """Each of these was a traceback or an 'unreachable' failure (exit 1) before."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    values = {"missing": str(tmp_path / "missing.pem"), "not_pem": str(not_pem)}
    result = runner.invoke(app, ["jobs", *[a.format(**values) for a in args]])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())


@pytest.mark.parametrize(
    "command", [["run"], ["submit"], ["jobs"], ["keys", "create"], ["schedule", "add"]]
)
def test_help_shows_the_values_options_take_and_none_for_flags(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # A flag takes no value, so help must not suggest one.
    help_line = next(line for line in lines if "--help" in line)
    assert help_line.split()[1:4] == ["--help", "-h", "Show"], help_line
    assert "<bool>" not in result.output
    assert "<str>" not in result.output
    assert "<list[str]>" not in result.output


def test_options_are_labelled_by_their_value() -> None:
    run = " ".join(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--task -t TASK" in run
    assert "--option -o KEY=VALUE" in run
    assert "--json Print" in run  # a flag: no label
    keys = " ".join(
        runner.invoke(app, ["keys", "create", "--help"], env={"COLUMNS": "200"}).output.split()
    )
    assert "--expires EXPIRES" in keys


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["schedule", "add"], "Usage: pravah schedule add [OPTIONS] CRON SOURCE"),
        (["retry"], "Usage: pravah retry [OPTIONS] JOB_ID"),
        (["run"], "Usage: pravah run [OPTIONS] SOURCE"),
    ],
)
def test_usage_names_arguments_as_unix_tools_do(command: list[str], usage: str) -> None:
    # Typer 0.29 wrote `{cron} {source}`: read as a template left unfilled.
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert usage in result.output
    assert "{" not in result.output.splitlines()[1]


def test_a_missing_argument_is_named_as_the_usage_line_names_it() -> None:
    result = runner.invoke(app, ["retry"])
    assert result.exit_code == 2
    assert "Missing argument 'JOB_ID'" in result.output
