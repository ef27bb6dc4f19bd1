"""Unit tests of the CLI's rendering of jobs, summaries and tasks (plain dicts in, text out)."""

from __future__ import annotations

import io
import json
import re

from pravah.cli.client import detail_message
from pravah.cli.common import format_validation_error
from pravah.cli.render import (
    JobProgress,
    describe_options,
    dump_json,
    error_message,
    job_counts,
    render_jobs_table,
    render_summary,
    render_tasks_table,
)
from pravah.cli.visible import visible
from rich.console import Console


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None, force_terminal=False), buffer


JOB = {
    "id": "7f1c0c9e-0000-4000-8000-000000000001",
    "status": "completed",
    "task": "csv-header",
    "source": "/data",
    "progress": {
        "files_total": 6,
        "bytes_total": 100,
        "files_done": 6,
        "files_failed": 2,
        "bytes_done": 90,
        "bytes_failed": 10,
    },
    "summary": {
        "schemas": [
            {"columns": ["id", "name", "city, state"], "files": 3, "example": "a/one.csv"},
            {"columns": ["x"], "files": 1, "example": "b.tsv"},
        ]
    },
}


def test_counts_are_read_from_the_nested_progress_block() -> None:
    counts = job_counts(JOB)
    assert (counts.files_done, counts.files_failed, counts.files_total) == (6, 2, 6)
    assert (counts.files_processed, counts.files_ok) == (6, 4)


def test_counts_are_read_from_a_flat_document_too() -> None:
    counts = job_counts({"files_done": 3, "files_failed": 1, "files_total": None})
    assert (counts.files_processed, counts.files_ok, counts.files_total) == (3, 2, None)


def test_summary_table_names_every_schema_with_counts_examples_and_errors() -> None:
    console, buffer = _console()
    errors = [
        {
            "path": "empty.csv",
            "size": 0,
            "error": "the file is empty",
            "error_kind": "invalid_data",
        },
        {"path": "ok.csv", "columns": ["a"]},
        {"path": "blob.csv", "error": {"kind": "ERROR_KIND_INVALID_DATA", "message": "binary"}},
    ]
    render_summary(console, JOB, errors)
    text = buffer.getvalue()
    assert "2 distinct schemas" in text
    # One column's name holds a comma: quoted, so it reads as one column.
    assert 'id, name, "city, state"' in text
    assert "a/one.csv" in text
    assert "b.tsv" in text
    assert "completed" in text
    assert "6 files (4 ok, 2 failed)" in text
    assert "empty.csv: the file is empty" in text
    assert "blob.csv: [invalid_data] binary" in text
    assert "ok.csv" not in text


def test_a_schema_table_says_what_the_listing_could_not_read() -> None:
    console, buffer = _console()
    listing = {
        "files": 2,
        "errors": 3,
        "error_examples": [{"path": "a/etc", "message": "symlink points outside the source root"}],
    }
    job = {**JOB, "summary": {**JOB["summary"], "listing": listing}}  # type: ignore[dict-item]
    render_summary(console, job)
    text = " ".join(buffer.getvalue().split())
    assert "listing: 3 entries could not be read, e.g. a/etc: symlink points outside" in text


def test_column_names_that_would_read_ambiguously_are_quoted() -> None:
    console, buffer = _console()
    names = ["plain", "", " padded", 'say "hi"', "a,b", "ünïcode"]
    job = {**JOB, "summary": {"schemas": [{"columns": names, "files": 1, "example": "x.csv"}]}}
    render_summary(console, job)
    text = re.sub(r"\s*│\s*", " ", buffer.getvalue())
    assert 'plain, "", " padded", "say \\"hi\\"", "a,b", ünïcode' in text, text


def test_a_schema_table_of_headerless_files_shows_the_first_20_and_counts_the_rest() -> None:
    """Headerless CSVs make one schema per file: 100,000 table rows took a minute."""
    console, buffer = _console()
    schemas = [{"columns": [f"row {i}"], "files": 1, "example": f"{i}.csv"} for i in range(25)]
    render_summary(console, {**JOB, "summary": {"schemas": schemas}})
    text = buffer.getvalue()
    assert "25 distinct schemas" in text
    assert "19.csv" in text
    assert "20.csv" not in text
    # The caption wraps at the table's width.
    assert "and 5 more (--json or --output list them all)" in " ".join(text.split())

    # Beyond what the engine lists, the count comes from the summary.
    console, buffer = _console()
    summary = {"schemas": schemas, "distinct_schemas": 1025, "omitted_schemas": 1000}
    render_summary(console, {**JOB, "summary": summary})
    text = " ".join(buffer.getvalue().split())
    assert "1,025 distinct schemas" in text
    assert "and 1,005 more (--json lists the 25 most common, --output every file's columns)" in text


HASH_JOB = {
    **JOB,
    "task": "hash",
    "summary": {
        "algorithm": "blake3",
        "files": 9,
        "bytes": 2_842_945,
        "wasted_bytes": 710_735,
        "duplicates": [
            {"hash": "a5b909ee991029d7" * 4, "files": 2, "size": 405_264, "example": "dup.log"},
            *(
                {"hash": f"{i:064x}", "files": 2, "size": 10, "example": f"{i}.bin"}
                for i in range(11)
            ),
        ],
        "listing": {
            "files": 9,
            "errors": 1,
            "error_examples": [
                {"path": "locked", "kind": "permission_denied", "message": "permission denied"}
            ],
        },
        "failures": [{"path": "x.bin", "error": "gone"}],
    },
}


def test_a_task_summary_is_tables_not_json() -> None:
    console, buffer = _console()
    render_summary(console, HASH_JOB)
    text = buffer.getvalue()
    assert "{" not in text and '"' not in text  # no JSON left for a person to parse
    lines = text.splitlines()
    assert any(line.split() == ["algorithm", "blake3"] for line in lines)
    # Totals: humanized, with the exact count; rows: humanized only.
    assert "2.8 MB (2,842,945 bytes)" in text
    assert "710.7 kB (710,735 bytes)" in text
    row = next(line for line in lines if "dup.log" in line)
    assert "a5b909ee9910…" in row and "405.3 kB" in row and "405,264" not in row
    # Ten rows of a list, then a count of the rest.
    assert "8.bin" in text and "9.bin" not in text
    assert "and 2 more" in text
    # The listing's trouble gets a line; failures are left to the error lines.
    assert "listing: 1 entries could not be read, e.g. locked: permission denied" in text
    assert "x.bin" not in text


def test_files_without_an_extension_are_a_named_row_of_an_inventory() -> None:
    console, buffer = _console()
    by_extension = [{"extension": "", "files": 3, "bytes": 10}, {"extension": "gz", "files": 1}]
    job = {**JOB, "task": "inventory", "summary": {"files": 4, "by_extension": by_extension}}
    render_summary(console, job)
    row = next(line for line in buffer.getvalue().splitlines() if "(none)" in line)
    assert row.split("│")[2].strip() == "3", row


def test_a_pipeline_summary_lists_its_steps_without_their_nested_summaries() -> None:
    console, buffer = _console()
    steps = [
        {"step": 1, "task": "extract", "files": 1, "files_failed": 0, "summary": {"entries": 4}},
        {"step": 2, "task": "thumbnail", "files": 4, "files_failed": 1, "summary": {"x": 1}},
    ]
    render_summary(console, {**JOB, "task": "pipeline", "summary": {"files": 5, "steps": steps}})
    text = buffer.getvalue()
    rows = {
        cells[1]: cells
        for line in text.splitlines()
        if len(cells := [c.strip() for c in re.split("[│┃]", line.strip("│┃ "))]) > 2
    }
    assert rows["task"] == ["step", "task", "files", "files failed"]
    assert rows["thumbnail"] == ["2", "thumbnail", "4", "1"]
    assert "entries" not in text and "{" not in text


def _frames(job_documents: list[dict[str, object]], width: int = 80) -> list[str]:
    """The progress line as drawn after each document (a terminal `width` wide)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    frames = []
    with JobProgress(enabled=True, console=console) as progress:
        for document in job_documents:
            progress.update(document)
            assert progress._progress is not None
            progress._progress.refresh()
            frames.append(buffer.getvalue().rsplit("\r", 1)[-1])
    frames.append(buffer.getvalue().rsplit("\r", 1)[-1])
    return [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", f) for f in frames]


def test_the_progress_line_fits_an_80_column_terminal() -> None:
    def job(status: str, done: int) -> dict[str, object]:
        progress = {
            "files_total": 200_000,
            "files_done": done,
            "files_failed": 3,
            "files_per_second": 42_438.2,
            "eta_seconds": 3.2,
        }
        return {"status": status, "progress": progress}

    during, *_, after = _frames([job("running", 20_000), job("completed", 200_000)])
    assert "running (3 failed)" in during
    assert "20,000/200,000 42,438 files/s ETA 0:00:03" in during
    line = after.rstrip("\n")
    assert "\n" not in line and len(line) <= 80, after  # one line: nothing wrapped
    assert "200,000/200,000 42,438 files/s took 0:00:0" in line
    # A job that ends short of its total says how long it took, not an ETA.
    *_, cancelled = _frames([job("running", 20_000), job("cancelled", 20_000)])
    assert "20,000/200,000 42,438 files/s took 0:00:0" in cancelled


def test_brackets_in_data_are_not_read_as_markup() -> None:
    console, buffer = _console()  # a console with markup on, as Rich's default
    job = {
        **JOB,
        "summary": {
            "schemas": [{"columns": ["w [kg]", "[b]", "[/]"], "files": 1, "example": "[/]a.csv"}]
        },
    }
    render_summary(console, job)
    assert "w [kg], [b], [/]" in buffer.getvalue() and "[/]a.csv" in buffer.getvalue()
    console, buffer = _console()
    render_summary(
        console, {**HASH_JOB, "summary": {"largest": [{"path": "[/]x [y].bin", "size": 3}]}}
    )
    assert "[/]x [y].bin" in buffer.getvalue()
    console, buffer = _console()
    render_jobs_table(console, [{**JOB, "source": "/data/[/]in [1]"}])
    assert "/data/[/]in [1]" in buffer.getvalue()


def test_control_characters_are_shown_as_escapes() -> None:
    assert visible("a\x1b[31mb\tc\nd\re\x07\x7f\x9b é 日本") == (
        "a\\x1b[31mb\\tc\\nd\\re\\x07\\x7f\\x9b é 日本"
    )
    console, buffer = _console()
    render_summary(
        console, {**HASH_JOB, "summary": {"largest": [{"path": "x\x1b]0;t\x07", "size": 1}]}}
    )
    assert "x\\x1b]0;t\\x07" in buffer.getvalue() and "\x1b" not in buffer.getvalue()


def test_summary_of_a_failed_job_shows_the_reason() -> None:
    console, buffer = _console()
    render_summary(console, {**JOB, "status": "failed", "summary": None, "error": "engine died"})
    text = buffer.getvalue()
    assert "failed" in text
    assert "reason: engine died" in text


def test_error_message_is_none_for_successful_lines() -> None:
    assert error_message({"path": "a", "columns": []}) is None
    assert error_message({"path": "a", "error": None}) is None
    assert error_message({"path": "a", "error": "bad"}) == "bad"


def test_dump_json_writes_exactly_one_document() -> None:
    buffer = io.StringIO()
    dump_json(JOB, buffer)
    assert json.loads(buffer.getvalue()) == JOB
    assert buffer.getvalue().endswith("}\n")


def test_jobs_table_lists_ids_and_statuses() -> None:
    console, buffer = _console()
    render_jobs_table(console, [JOB, {**JOB, "id": "other", "status": "running"}])
    text = buffer.getvalue()
    assert JOB["id"] in text
    assert "other" in text
    assert "running" in text


def test_tasks_table_describes_options_from_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "max_header_bytes": {"type": "integer", "default": 65536, "description": "Limit."},
            "delimiter": {"type": ["string", "null"], "enum": [",", ";", None]},
        },
    }
    assert describe_options(schema) == (
        "max_header_bytes (integer, default 65536): Limit.\n"
        'delimiter (string|null, one of ","/";"/null)'
    )
    assert describe_options({}) == "(none)"
    console, buffer = _console()
    render_tasks_table(
        console,
        [
            {
                "name": "csv-header",
                "version": "1",
                "description": "Headers.",
                "options_schema": schema,
            }
        ],
    )
    assert "csv-header" in buffer.getvalue()
    assert "max_header_bytes" in buffer.getvalue()
    # One option per line, not one line with "\n" written in it.
    assert "\\n" not in buffer.getvalue()
    option_lines = [line for line in buffer.getvalue().splitlines() if "delimiter (" in line]
    assert len(option_lines) == 1 and "max_header_bytes" not in option_lines[0]


def test_api_error_detail_is_one_line_for_strings_and_validation_lists() -> None:
    import httpx

    plain = httpx.Response(400, json={"detail": "unknown task 'nope'"})
    assert detail_message(plain) == "unknown task 'nope'"
    listed = httpx.Response(
        422,
        json={
            "detail": [
                {"loc": ["body", "filters", "min_size"], "msg": "Value error, invalid size"},
                {"loc": ["body", "task"], "msg": "Field required"},
            ]
        },
    )
    assert detail_message(listed) == "filters.min_size: invalid size; task: Field required"
    assert detail_message(httpx.Response(502, text="")) == "HTTP 502 Bad Gateway"


def test_validation_errors_are_flattened_into_one_line() -> None:
    import pytest
    from pravah.models import JobCreate
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate({"source": "/x", "task": "t", "filters": {"min_size": "12XB"}})
    message = format_validation_error(info.value)
    assert message.startswith("filters.min_size: invalid size '12XB'")
    assert "\n" not in message


def test_piped_jobs_listing_keeps_one_whole_line_per_job() -> None:
    """An 80-column table cut status, task and counts to `com…`, so
    `pravah jobs | grep completed` found nothing."""
    console, buffer = _console()
    source = "/home/someone/data/" + "very/long/" * 8 + "csvs"
    render_jobs_table(console, [{**JOB, "source": source}, {**JOB, "id": "b", "status": "running"}])
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].split() == [
        "ID",
        "Status",
        "Task",
        "Files",
        "Failed",
        "Source",
        "Created",
        "(UTC)",
    ]
    assert lines[1].split()[:3] == [JOB["id"], JOB["status"], JOB["task"]]
    assert source in lines[1] and lines[2].split()[:2] == ["b", "running"]


def test_a_server_url_with_a_wrong_path_is_not_read_as_a_missing_job() -> None:
    import httpx
    import pytest
    from pravah.cli.client import ApiClient
    from pravah.cli.common import CliFailure

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs/j1":
            return httpx.Response(404, json={"detail": "job j1 not found"})
        return httpx.Response(404, json={"detail": "Not Found"})  # FastAPI: no such route

    for server, needle in (
        ("http://127.0.0.1:8000", "job j1 not found"),
        ("http://127.0.0.1:8000/api", "/api/jobs/j1 is not a Pravah API endpoint (HTTP 404)"),
    ):
        client = ApiClient(server)
        client.http = httpx.Client(base_url=client.server, transport=httpx.MockTransport(answer))
        with pytest.raises(CliFailure) as failure:
            client.request("GET", "/jobs/j1")
        assert needle in str(failure.value), failure.value
