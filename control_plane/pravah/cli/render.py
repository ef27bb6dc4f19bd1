"""How jobs look in a terminal: the progress bar, the schema table, the JSON document.

Why separate from the commands: the in-process `pravah run` and the REST
`pravah submit --wait` show the same job the same way, and rendering works on
plain JSON-shaped dicts (``JobPublic.model_dump(mode="json")`` or the server's
response body), so it never depends on where the job came from and unit tests
can feed it literals.

Human output goes to stderr-bound progress and a stdout table; machine output
(``--json``) is exactly one JSON document on stdout, and nothing else is
written to stdout in that mode.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
)
from rich.table import Column, Table
from rich.text import Text

from pravah.cli.visible import data, visible

__all__ = [
    "MAX_ERRORS_SHOWN",
    "JobCounts",
    "JobProgress",
    "dump_json",
    "error_message",
    "job_counts",
    "render_job_line",
    "render_jobs_table",
    "render_summary",
    "render_tasks_table",
]

MAX_ERRORS_SHOWN = 5
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return None


def _lookup(job: Mapping[str, Any], *names: str) -> int | None:
    """The first integer found under any of ``names``, at the top or in a nested block.

    The job document keeps its counters either flat or under ``progress`` /
    ``counts``; looking in all three keeps the CLI working with either shape.
    """
    scopes: list[Mapping[str, Any]] = [job]
    for nested in ("progress", "counts", "totals", "stats"):
        block = job.get(nested)
        if isinstance(block, Mapping):
            scopes.append(block)
    for scope in scopes:
        for name in names:
            value = _int(scope.get(name))
            if value is not None:
                return value
    return None


@dataclass(frozen=True)
class JobCounts:
    """The counters a person wants to see, whatever the document's layout."""

    files_done: int
    files_failed: int
    files_total: int | None
    bytes_done: int
    bytes_total: int | None

    @property
    def files_processed(self) -> int:
        """Files finished either way: the engine's ``files_done`` includes the failed ones."""
        return max(self.files_done, self.files_failed)

    @property
    def files_ok(self) -> int:
        return max(0, self.files_done - self.files_failed)


def job_counts(job: Mapping[str, Any]) -> JobCounts:
    total_known = job.get("discovery_complete")
    files_total = _lookup(job, "files_total", "total_files", "files_discovered")
    bytes_total = _lookup(job, "bytes_total", "total_bytes", "bytes_discovered")
    # A discovered-so-far count is not a total until discovery is complete.
    if total_known is False:
        files_total = bytes_total = None
    return JobCounts(
        files_done=_lookup(job, "files_done", "done_files", "files_processed") or 0,
        files_failed=_lookup(job, "files_failed", "failed_files") or 0,
        files_total=files_total,
        bytes_done=_lookup(job, "bytes_done", "done_bytes", "bytes_processed") or 0,
        bytes_total=bytes_total,
    )


def dump_json(document: Any, stream: TextIO | None = None) -> None:
    """Writes one JSON document and a newline: the whole of stdout in ``--json`` mode."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(document, indent=2, sort_keys=False, default=str))
    out.write("\n")
    out.flush()


# -- progress -------------------------------------------------------------


class FilesDoneColumn(ProgressColumn):
    """Files done of the total, with thousands separators ("?" while unknown)."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total}", style="progress.download")


class FilesPerSecondColumn(ProgressColumn):
    """Files per second: the job's own rate when it reports one, else Rich's estimate.

    Rich's speed column counts bytes, and its estimate needs several samples;
    the job document's ``files_per_second`` is right from the first update.
    """

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        speed = rate if isinstance(rate, (int, float)) else (task.finished_speed or task.speed)
        if speed is None:
            return Text("- files/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} files/s", style="progress.data.speed")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` while the job runs (the job's own ETA, by bytes, from
    the control plane; else Rich's estimate), ``took h:mm:ss`` once it has
    ended, whether it completed, failed or was cancelled."""

    def render(self, task: Task) -> Text:
        if task.finished or task.fields.get("ended"):
            took = task.finished_time or task.elapsed or 0
            return Text(f"took {_clock(took)}", style="progress.elapsed")
        eta = task.fields.get("eta")
        if not isinstance(eta, (int, float)):
            eta = task.time_remaining
        shown = "-:--:--" if eta is None else _clock(eta)
        return Text(f"ETA {shown}", style="progress.remaining")


class JobProgress:
    """A live bar on stderr fed with job documents; silent when not wanted.

    Disabled (every method a no-op) when stderr is not a terminal or the
    caller asked for quiet/JSON output, so scripts and CI logs never see
    control sequences.
    """

    def __init__(self, *, enabled: bool, console: Console | None = None) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task_id: Any = None

    def __enter__(self) -> JobProgress:
        if self.enabled:
            # The bar takes what the terminal has left and the numbers never
            # wrap: on an 80-column terminal a fixed 40-column bar and an
            # ETA and an elapsed column pushed "files/s" onto a second line.
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10)),
                FilesDoneColumn(table_column=Column(no_wrap=True)),
                FilesPerSecondColumn(table_column=Column(no_wrap=True)),
                EtaColumn(table_column=Column(no_wrap=True)),
                console=self.console,
                transient=False,
                refresh_per_second=8,
                expand=True,
            )
            self._progress.__enter__()
            self._task_id = self._progress.add_task(
                "starting", total=None, rate=None, eta=None, ended=False
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def update(self, job: Mapping[str, Any]) -> None:
        if self._progress is None:
            return
        counts = job_counts(job)
        status = str(job.get("status", "running"))
        description = status
        if counts.files_failed:
            description = f"{status} ({counts.files_failed} failed)"
        block = job.get("progress")
        block = block if isinstance(block, Mapping) else job
        self._progress.update(
            self._task_id,
            completed=counts.files_processed,
            total=counts.files_total,
            description=description,
            rate=block.get("files_per_second"),
            eta=block.get("eta_seconds"),
            ended=status in TERMINAL_STATUSES,
        )


# -- summaries ------------------------------------------------------------


def error_message(line: Mapping[str, Any]) -> str | None:
    """The error text of a per-file result line, or None when the file succeeded."""
    error = line.get("error")
    if error is None or error == "":
        return None
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("detail") or ""
        kind = error.get("kind")
        text = str(message) if message else json.dumps(dict(error))
        if kind and str(kind).lower() not in text.lower():
            kind_name = str(kind).removeprefix("ERROR_KIND_").lower()
            return f"[{kind_name}] {text}"
        return text
    return str(error)


# Schemas shown, most files first; the rest are counted.
MAX_SCHEMA_ROWS = 20


def _column_name(column: Any) -> str:
    """A column name as listed: quoted when it holds a comma or a quote or
    is empty or padded, so `city, state` cannot read as two columns."""
    name = str(column)
    if not name or name != name.strip() or "," in name or '"' in name:
        return json.dumps(name, ensure_ascii=False)
    return name


def _columns_text(columns: Sequence[Any]) -> str:
    if not columns:
        return "(no columns)"
    return ", ".join(_column_name(c) for c in columns)


def render_summary(
    console: Console,
    job: Mapping[str, Any],
    error_lines: Iterable[Mapping[str, Any]] = (),
) -> None:
    """The end-of-job report: a schema table for csv-header (other tasks'
    summaries as tables too, see ``summary_tables``), counters, first errors."""
    counts = job_counts(job)
    status = str(job.get("status", "unknown"))
    task = str(job.get("task", ""))
    summary = job.get("summary")
    if isinstance(summary, str):
        with contextlib.suppress(ValueError):
            summary = json.loads(summary)

    schemas = summary.get("schemas") if isinstance(summary, Mapping) else None
    if isinstance(schemas, list):
        # Headerless files make one "schema" each: 100,000 rows took a
        # minute to print and told nobody anything.
        # The engine lists at most 1,000 schemas and counts the rest.
        whole: Mapping[str, Any] = summary if isinstance(summary, Mapping) else {}
        distinct = _int(whole.get("distinct_schemas")) or len(schemas)
        omitted = _int(whole.get("omitted_schemas")) or 0
        more = distinct - min(len(schemas), MAX_SCHEMA_ROWS)
        where = (
            f"--json lists the {len(schemas):,} most common, --output every file's columns"
            if omitted
            else "--json or --output list them all"
        )
        table = Table(
            title=f"{distinct:,} distinct schema{'s' if distinct != 1 else ''}",
            title_justify="left",
            show_lines=False,
            caption=Text(f"and {more:,} more ({where})") if more > 0 else None,
            caption_justify="left",
        )
        table.add_column("#", justify="right", style="dim")
        table.add_column("Columns", overflow="fold")
        table.add_column("Files", justify="right")
        table.add_column("Example", overflow="fold", style="cyan")
        for index, schema in enumerate(schemas[:MAX_SCHEMA_ROWS], start=1):
            if not isinstance(schema, Mapping):
                continue
            columns = schema.get("columns") or []
            table.add_row(
                str(index),
                data(_columns_text(columns if isinstance(columns, list) else [columns])),
                f"{_int(schema.get('files')) or 0:,}",
                data(schema.get("example", "")),
            )
        console.print(table)
        from pravah.cli.summary_tables import render_listing_problems

        render_listing_problems(console, whole)
    elif isinstance(summary, Mapping) and summary:
        from pravah.cli.summary_tables import render_task_summary

        render_task_summary(console, summary)
    elif summary:
        console.print_json(json.dumps(summary, default=str))

    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status, "")
    line = Text()
    line.append(f"{status}", style=f"bold {style}".strip())
    if task:
        line.append(f"  {task}")
    line.append(f"  {counts.files_processed:,} files")
    if counts.files_failed:
        line.append(f" ({counts.files_ok:,} ok, ")
        line.append(f"{counts.files_failed:,} failed", style="red")
        line.append(")")
    job_id = job.get("id")
    if job_id:
        line.append(f"  job {job_id}", style="dim")
    console.print(line, soft_wrap=True)

    reason = job.get("error") or job.get("failure_reason") or job.get("reason")
    if reason and status != "completed":
        console.print(data(f"reason: {reason}", style="red"))

    shown = 0
    for result in error_lines:
        message = error_message(result)
        if message is None:
            continue
        if shown == 0:
            console.print(Text("first errors:", style="bold red"))
        console.print(data(f"  {result.get('path', '?')}: {message}"))
        shown += 1
        if shown >= MAX_ERRORS_SHOWN:
            break
    if counts.files_failed > shown > 0:
        console.print(Text(f"  ... and {counts.files_failed - shown:,} more", style="dim"))


def results_removed(job: Mapping[str, Any]) -> str:
    """What a job whose per-file results expired says about them."""
    return (
        f"per-file results removed at {job.get('results_removed_at')} "
        "(older than the server's PRAVAH_RESULTS_RETENTION); the counts and summary stay"
    )


def render_job_line(console: Console, job: Mapping[str, Any]) -> None:
    """One job in a few lines, for `pravah status`."""
    counts = job_counts(job)
    total = f"/{counts.files_total:,}" if counts.files_total is not None else ""
    console.print(
        Text.assemble(
            data(job.get("id"), style="bold"),
            data(f"  {job.get('status')}  {job.get('task', '')}  {job.get('source', '')}"),
        )
    )
    console.print(f"  files {counts.files_processed:,}{total} ({counts.files_failed:,} failed)")
    for key in ("created_at", "started_at", "finished_at"):
        if job.get(key):
            console.print(data(f"  {key.replace('_', ' ')}: {job[key]}"))
    if job.get("results_removed_at"):
        console.print(data(f"  {results_removed(job)}", style="yellow"))
    reason = job.get("error") or job.get("failure_reason")
    if reason:
        console.print(data(f"  reason: {reason}", style="red"))


_JOB_COLUMNS = ("ID", "Status", "Task", "Files", "Failed", "Source", "Created (UTC)")
_COUNT_COLUMNS = frozenset({"Files", "Failed"})  # right-aligned


def _job_row(job: Mapping[str, Any]) -> list[str]:
    counts = job_counts(job)
    created = str(job.get("created_at") or "")
    return [
        visible(job.get("id", "")),
        visible(job.get("status", "")),
        visible(job.get("task", "")),
        f"{counts.files_processed:,}",
        f"{counts.files_failed:,}",
        visible(job.get("source", "")),
        visible(created[:16].replace("T", " ")),
    ]


def render_jobs_table(console: Console, jobs: Sequence[Mapping[str, Any]]) -> None:
    """The `pravah jobs` listing.

    A table in a terminal wide enough for it (a full id alone takes 36
    columns; ids stay whole, commands take them). Otherwise, and when
    piped, one line per job in aligned columns, never cut or wrapped by
    Pravah, as `ps` and `docker ps` print: `pravah jobs | grep running`
    finds every running job, and status, task and counts stay readable.
    """
    rows = [_job_row(job) for job in jobs]
    if not console.is_terminal or console.width < 120:
        lines = [list(_JOB_COLUMNS), *rows]
        widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
        for line in lines:
            cells = [
                cell.rjust(width) if name in _COUNT_COLUMNS else cell.ljust(width)
                for name, cell, width in zip(_JOB_COLUMNS, line, widths, strict=True)
            ]
            console.print(
                "  ".join(cells).rstrip(),
                markup=False,
                highlight=False,
                emoji=False,
                soft_wrap=True,
            )
        return
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for name in _JOB_COLUMNS:
        if name == "Source":
            table.add_column(name, overflow="fold", min_width=10)
        else:
            right = name in _COUNT_COLUMNS
            table.add_column(name, no_wrap=True, justify="right" if right else "left")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    console.print(table)


def render_tasks_table(console: Console, tasks: Sequence[Mapping[str, Any]]) -> None:
    """The `pravah tasks` listing: each task with its options from the JSON schema."""
    table = Table(show_lines=True)
    table.add_column("Task", no_wrap=True, style="bold")
    table.add_column("Version")
    table.add_column("Description", overflow="fold")
    table.add_column("Options", overflow="fold")
    for task in tasks:
        schema = task.get("options_schema") or {}
        if isinstance(schema, str):
            try:
                schema = json.loads(schema) if schema else {}
            except ValueError:
                schema = {}
        table.add_row(
            data(task.get("name", "")),
            data(task.get("version", "")),
            data(task.get("description", "")),
            # One line per option: the engine's own text, line breaks kept.
            Text(describe_options(schema if isinstance(schema, Mapping) else {})),
        )
    console.print(table)


def describe_options(schema: Mapping[str, Any]) -> str:
    """One line per option: ``name (type, default X): description``."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return "(none)"
    lines = []
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            lines.append(str(name))
            continue
        kind = prop.get("type", "")
        if isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        bits = [str(kind)] if kind else []
        if "enum" in prop:
            bits.append("one of " + "/".join(json.dumps(v) for v in prop["enum"]))
        if "default" in prop:
            bits.append(f"default {json.dumps(prop['default'])}")
        head = f"{name} ({', '.join(bits)})" if bits else str(name)
        description = prop.get("description")
        lines.append(f"{head}: {description}" if description else head)
    return "\n".join(lines)
