"""`pravah schedule ...` and `pravah retry JOB --failed` against a real `pravah serve`.

What a user sees: the schedule listed with its cron, state and next run,
pause and resume reflected in the listing, the server's reason for a bad
cron or an unknown id; and a retry job that runs over exactly the files
that failed (one fixed meanwhile, one still broken).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Cli, Server, assert_usage_error

pytestmark = pytest.mark.e2e


def _schedule_line(cli: Cli, remote: tuple[str, ...], schedule_id: str) -> str:
    listing = cli.run("schedule", "list", *remote)
    assert listing.returncode == 0, listing.stderr
    lines = [line for line in listing.stdout.splitlines() if schedule_id in line]
    assert len(lines) == 1, listing.stdout
    return lines[0]


def test_schedule_add_list_pause_resume_delete(cli: Cli, server: Server, csv_dir: Path) -> None:
    remote = ("--server", server.url)
    added = cli.run(
        "schedule", "add", "0 3 * * *", str(csv_dir), "--task", "csv-header",
        "--name", "nightly headers \x1b[2J", *remote,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule ") and " added; next run " in added.stdout
    schedule_id = added.stdout.split()[1]
    assert "03:00:00" in added.stdout  # the next tick of '0 3 * * *', in UTC

    line = _schedule_line(cli, remote, schedule_id)
    assert "0 3 * * *" in line and "active" in line
    # An escape sequence in the name is shown, not sent to the terminal.
    assert "nightly headers \\x1b[2J" in line and "\x1b" not in line
    assert "next " in line and "03:00:00" in line
    assert "last -" in line  # never ran yet

    as_json: list[dict[str, Any]] = json.loads(
        cli.run("schedule", "list", "--json", *remote).stdout
    )
    [row] = as_json
    assert row["id"] == schedule_id and row["paused"] is False
    assert row["job"]["source"] == str(csv_dir) and row["job"]["task"] == "csv-header"
    assert row["owner"] == "admin"

    paused = cli.run("schedule", "pause", schedule_id, *remote)
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    assert "paused" in _schedule_line(cli, remote, schedule_id)
    resumed = cli.run("schedule", "resume", schedule_id, "--json", *remote)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["paused"] is False
    assert "active" in _schedule_line(cli, remote, schedule_id)

    deleted = cli.run("schedule", "delete", schedule_id, *remote)
    assert deleted.returncode == 0, deleted.stderr
    assert f"schedule {schedule_id} deleted" in deleted.stdout
    assert cli.run("schedule", "list", "--json", *remote).stdout.strip() == "[]"

    # The server's reasons, no traceback: unknown id (exit 1), bad cron and
    # bad source (exit 2, usage).
    again = cli.run("schedule", "delete", schedule_id, *remote)
    assert again.returncode == 1 and "no schedule with id" in again.stderr
    assert "Traceback" not in again.stderr
    assert_usage_error(
        cli.run("schedule", "add", "61 * * * *", str(csv_dir), "--task", "csv-header", *remote),
        "invalid cron expression",
    )
    assert_usage_error(
        cli.run(
            "schedule", "add", "0 3 * * *", str(csv_dir / "nope"), "--task", "csv-header", *remote
        ),
        "does not exist",
    )
    assert cli.run("schedule", "list", "--json", *remote).stdout.strip() == "[]"


def _wait_status(cli: Cli, remote: tuple[str, ...], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        status = cli.run("status", job_id, "--json", *remote)
        assert status.returncode == 0, status.stderr
        job: dict[str, Any] = json.loads(status.stdout)
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_retry_failed_runs_exactly_the_failed_files(
    cli: Cli, server: Server, csv_dir: Path, tmp_path: Path
) -> None:
    remote = ("--server", server.url)
    first = cli.run("submit", str(csv_dir), "--task", "csv-header", "--wait", "--json", *remote)
    assert first.returncode == 0, first.stderr
    parent = json.loads(first.stdout)
    assert parent["progress"]["files_failed"] == 2  # empty.csv and blob.csv

    # Without --failed the command says what is missing.
    assert_usage_error(cli.run("retry", parent["id"], *remote), "--failed")

    # The user fixes one of the two broken files, then retries.
    (csv_dir / "empty.csv").write_text("fixed,now\n1,2\n")
    retried = cli.run("retry", parent["id"], "--failed", *remote)
    assert retried.returncode == 0, retried.stderr
    words = retried.stdout.split()
    assert words[0] == "job" and f"retries the failed files of job {parent['id']}" in retried.stdout
    child_id = words[1]
    child = _wait_status(cli, remote, child_id)
    assert child["status"] == "completed"
    assert child["retry_of"] == parent["id"]
    assert child["progress"]["files_total"] == 2
    assert child["progress"]["files_failed"] == 1

    output = tmp_path / "retry.jsonl"
    got = cli.run("results", child_id, "--output", str(output), *remote)
    assert got.returncode == 0, got.stderr
    lines = {(r := json.loads(line))["path"]: r for line in output.read_text().splitlines()}
    assert set(lines) == {"empty.csv", "blob.csv"}  # exactly the failed ones, once each
    assert lines["empty.csv"]["columns"] == ["fixed", "now"]
    assert lines["blob.csv"]["error_kind"] == "invalid_data"

    # A job without failures has nothing to retry: the server's reason, exit 1.
    again = cli.run("retry", _ok_job(cli, remote, csv_dir), "--failed", *remote)
    assert again.returncode == 1 and "no failed files" in again.stderr
    assert "Traceback" not in again.stderr
    missing = cli.run("retry", "00000000-0000-4000-8000-000000000000", "--failed", *remote)
    assert missing.returncode == 1 and "no job with id" in missing.stderr


def _ok_job(cli: Cli, remote: tuple[str, ...], csv_dir: Path) -> str:
    """A finished job in which no file failed."""
    done = cli.run(
        "submit", str(csv_dir), "--task", "csv-header", "--ext", "tsv", "--wait", "--json", *remote
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["progress"]["files_failed"] == 0
    job_id: str = job["id"]
    return job_id
