"""The client commands against `pravah serve` running as a subprocess.

One server per test, on a free port with its own state folder; the fixture
stops it with SIGINT and asserts a clean exit (status 0, no traceback).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_harness import TREE_RESULTS, Cli, Server, assert_usage_error, free_port

if TYPE_CHECKING:
    from conftest import Servers

pytestmark = pytest.mark.e2e


def test_submit_wait_status_results_jobs_and_cancel_against_a_server(
    cli: Cli, server: Server, csv_dir: Path, tmp_path: Path
) -> None:
    remote = ("--server", server.url)

    waited = cli.run("submit", str(csv_dir), "--task", "csv-header", "--wait", "--json", *remote)
    assert waited.returncode == 0, waited.stderr
    job = json.loads(waited.stdout)
    assert job["status"] == "completed"
    assert job["progress"]["files_done"] == len(TREE_RESULTS)
    assert job["progress"]["files_failed"] == 2
    assert len(job["summary"]["schemas"]) == 4

    # Human output of --wait: the same schema table as `pravah run`.
    table = cli.run("submit", str(csv_dir), "--task", "csv-header", "--wait", *remote)
    assert table.returncode == 0, table.stderr
    assert "4 distinct schemas" in table.stdout
    assert '"last, first", age' in table.stdout

    # Without --wait: just the id on stdout.
    queued = cli.run("submit", str(csv_dir), "--task", "csv-header", "--ext", "tsv", *remote)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    deadline = time.monotonic() + 60
    while True:
        status = cli.run("status", job_id, "--json", *remote)
        assert status.returncode == 0, status.stderr
        if json.loads(status.stdout)["status"] == "completed":
            break
        assert time.monotonic() < deadline, status.stdout
        time.sleep(0.2)
    human = cli.run("status", job_id, *remote)
    assert job_id in human.stdout
    assert "completed" in human.stdout

    output = tmp_path / "remote.jsonl"
    results = cli.run("results", job["id"], "--output", str(output), *remote)
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert {line["path"] for line in lines} == set(TREE_RESULTS)
    assert {line["path"]: line.get("columns", line.get("error_kind")) for line in lines} == {
        path: expected for path, expected in TREE_RESULTS.items()
    }
    piped = cli.run("results", job["id"], "--output", "-", *remote)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == output.read_text()  # the same lines, on standard output
    # An --output that cannot be written: said at once, nothing submitted.
    unwritable = cli.run("results", job["id"], "--output", "/proc/r.jsonl", *remote)
    assert_usage_error(unwritable, "--output '/proc/r.jsonl': no file can be created")
    submit = ["submit", str(csv_dir), "--task", "csv-header", "--wait", "--output", "/proc/r.jsonl"]
    assert_usage_error(cli.run(*submit, *remote), "no file can be created in '/proc'")
    only_tsv = cli.run("results", job_id, "--json", *remote)
    assert [item["path"] for item in json.loads(only_tsv.stdout)["items"]] == ["tabs.tsv"]

    listing = cli.run("jobs", "--json", *remote)
    assert listing.returncode == 0, listing.stderr
    ids = [item["id"] for item in json.loads(listing.stdout)["items"]]
    assert job["id"] in ids
    assert job_id in ids
    assert ids[0] == job_id  # newest first
    table_listing = cli.run("jobs", "--status", "completed", *remote)
    assert job_id in table_listing.stdout

    # A finished job cannot be cancelled: the server's reason, exit 1.
    finished = cli.run("cancel", job_id, *remote)
    assert finished.returncode == 1
    assert "already finished" in finished.stderr
    assert "Traceback" not in finished.stderr

    # Unknown job: the server's 404 detail, exit 1.
    missing = cli.run("status", "00000000-0000-4000-8000-000000000000", *remote)
    assert missing.returncode == 1
    assert "no job with id" in missing.stderr

    # --wait with --output -: the lines on standard output, the report on stderr.
    waited = cli.run("submit", str(csv_dir), "--task", "csv-header", "--wait", "--output", "-",
                     *remote)  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    assert len(waited.stdout.splitlines()) == len(TREE_RESULTS)
    assert "completed" in waited.stderr


def test_cancel_of_a_queued_job_marks_it_cancelled(
    cli: Cli, idle_server: Server, csv_dir: Path
) -> None:
    remote = ("--server", idle_server.url)
    queued = cli.run("submit", str(csv_dir), "--task", "csv-header", *remote)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert json.loads(cli.run("status", job_id, "--json", *remote).stdout)["status"] == "pending"
    cancelled = cli.run("cancel", job_id, *remote)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancel requested for job {job_id} (status: cancelled)" in cancelled.stdout
    state = json.loads(cli.run("status", job_id, "--json", *remote).stdout)
    assert state["status"] == "cancelled"
    # Its results do not exist: the server says why, exit 1.
    results = cli.run("results", job_id, *remote)
    assert results.returncode == 1
    assert "without results" in results.stderr


def test_bad_submissions_exit_2_with_the_servers_message(
    cli: Cli, server: Server, csv_dir: Path
) -> None:
    remote = ("--server", server.url)
    assert_usage_error(
        cli.run("submit", str(csv_dir / "nope"), "--task", "csv-header", *remote),
        "does not exist",
    )
    assert_usage_error(
        cli.run("submit", str(csv_dir), "--task", "nope", *remote), "unknown task 'nope'"
    )
    assert_usage_error(
        cli.run("submit", str(csv_dir), "--task", "csv-header", "-o", "bogus=1", *remote),
        "unknown option 'bogus'",
    )
    assert_usage_error(
        cli.run("submit", str(csv_dir), "--task", "csv-header", "--max-size", "12XB", *remote),
        "--max-size",
    )


def test_unreachable_server_is_named_and_exits_1(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli.run("jobs", "--server", url)
    assert result.returncode == 1
    assert f"cannot reach the Pravah server at {url}" in result.stderr
    assert "Traceback" not in result.stderr
    via_env = cli.run("status", "x", extra_env={"PRAVAH_SERVER": url})
    assert via_env.returncode == 1
    assert url in via_env.stderr


def test_serve_on_a_port_in_use_says_so_before_starting_anything(cli: Cli) -> None:
    """It was one JSON log line from uvicorn, after the store was migrated and
    an engine started (and stopped again), with exit status 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli.run("serve", "--port", str(port), timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "engine started" not in result.stderr and "Traceback" not in result.stderr
    unknown = cli.run("serve", "--host", "no-such-host.invalid", "--allow-unauthenticated")
    assert unknown.returncode == 1
    assert "--host 'no-such-host.invalid' is not an address or name" in unknown.stderr


def test_a_job_whose_results_expired_still_shows_its_summary_and_says_why(
    cli: Cli, servers: Servers, csv_dir: Path, tmp_path: Path
) -> None:
    """Per-file results expire (PRAVAH_RESULTS_RETENTION); the summary and
    counts stay in the job. `pravah results` used to fail with a 410 there,
    though its summary view needs nothing that was removed."""
    keep_one_second = {"PRAVAH_RESULTS_RETENTION": "1s"}
    first = servers.start(keep_one_second)
    remote = ("--server", first.url)
    done = cli.run("submit", str(csv_dir), "--task", "csv-header", "--wait", "--json", *remote)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]
    servers.stop(first)
    time.sleep(1.1)
    # The worker sweeps when it starts.
    second = servers.start(keep_one_second)
    remote = ("--server", second.url)
    deadline = time.monotonic() + 30
    while True:
        job = json.loads(cli.run("status", job_id, "--json", *remote).stdout)
        if job["results_removed_at"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    status = cli.run("status", job_id, *remote)
    assert status.returncode == 0, status.stderr
    assert "per-file results removed at" in status.stdout

    summary = cli.run("results", job_id, *remote)
    assert summary.returncode == 0, summary.stderr
    assert "4 distinct schemas" in summary.stdout
    assert '"last, first", age' in summary.stdout
    assert "per-file results removed at" in summary.stderr

    lines = cli.run("results", job_id, "--output", str(tmp_path / "r.jsonl"), *remote)
    assert lines.returncode == 1
    assert "per-file results were removed" in lines.stderr
    assert "Traceback" not in lines.stderr
