"""Typer parameter declarations shared by `run` and `submit`.

Why: both commands take the same job description; declaring each flag once as
an ``Annotated`` alias keeps their names, help and envvars identical.
Deployment-level knobs carry ``envvar=`` fallbacks under the ``PRAVAH_``
prefix; per-job flags deliberately do not (a stray PRAVAH_INCLUDE in a shell
would silently change every job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JOB_PANEL = "Job"
FILTER_PANEL = "Filters"
OUTPUT_PANEL = "Output"

Source = Annotated[
    str,
    typer.Argument(
        help="Directory to process (a local path or file:// URI; other URIs go to the engine).",
        show_default=False,
    ),
]
Task = Annotated[
    list[str] | None,
    typer.Option(
        "--task",
        "-t",
        help="Task to run on every file, e.g. csv-header (see `pravah tasks`). "
        "Repeat for a pipeline (extract, then thumbnail); options then read TASK.KEY=VALUE.",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
PipelineFile = Annotated[
    Path | None,
    typer.Option(
        "--pipeline",
        metavar="FILE",
        help="A YAML or JSON pipeline: a list of steps {task, options} (or {steps: [...]}).",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
MaxErrorRatio = Annotated[
    float | None,
    typer.Option(
        "--max-error-ratio",
        min=0.0,
        max=1.0,
        help="End the job 'failed' when more than this share of files failed (0-1).",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
Sse = Annotated[
    str | None,
    typer.Option(
        "--sse",
        metavar="MODE",
        help="Server-side encryption of objects written to an s3:// --dest: "
        "aes256 (sse-s3) or aws:kms (sse-kms) (default: PRAVAH_S3_SSE).",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
SseKmsKeyId = Annotated[
    str | None,
    typer.Option(
        "--sse-kms-key-id",
        metavar="KEY",
        help="KMS key id or ARN for --sse aws:kms (implies it; default: the account's key).",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="List what would be processed (files and bytes) and change nothing.",
        rich_help_panel=JOB_PANEL,
    ),
]
TaskOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Task option; VALUE is JSON when it parses (10, true), else a string. Repeatable.",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
Destination = Annotated[
    str | None,
    typer.Option(
        "--dest",
        help="Where tasks that write files put their outputs (path or URI).",
        rich_help_panel=JOB_PANEL,
        show_default=False,
    ),
]
Include = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="GLOB",
        help=(
            "Only files whose relative path matches (e.g. '**/*.csv'; also ?, \\[a-z], {csv,tsv}; "
            "* stays within one folder). Repeatable."
        ),
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        metavar="GLOB",
        help="Skip files and directories that match. Repeatable.",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
Extension = Annotated[
    list[str] | None,
    typer.Option(
        "--ext",
        metavar="EXT",
        help="Only these extensions, without the dot (csv, tsv). Repeatable.",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
MinSize = Annotated[
    str | None,
    typer.Option(
        "--min-size",
        metavar="SIZE",
        help="Smallest file size, inclusive (500, 10KB, 1MiB).",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
MaxSize = Annotated[
    str | None,
    typer.Option(
        "--max-size",
        metavar="SIZE",
        help="Largest file size, inclusive.",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
OlderThan = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="AGE|DATE",
        help=(
            "Only files last modified before this: an age counted back from when the job "
            "is made (12h, 1d, 2w; a schedule counts from each run) or a date (2024-05-01)."
        ),
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
NewerThan = Annotated[
    str | None,
    typer.Option(
        "--newer-than",
        metavar="AGE|DATE",
        help="Only files last modified at or after this: an age (12h, 7d) or a date.",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
MaxDepth = Annotated[
    int | None,
    typer.Option(
        "--max-depth",
        min=0,
        help="Deepest directory level to descend to; 0 means no limit.",
        rich_help_panel=FILTER_PANEL,
        show_default=False,
    ),
]
Hidden = Annotated[
    bool,
    typer.Option(
        "--hidden",
        help="Include files and directories whose name starts with a dot.",
        rich_help_panel=FILTER_PANEL,
    ),
]
FollowSymlinks = Annotated[
    bool,
    typer.Option(
        "--follow-symlinks",
        help="Follow symbolic links (never outside the source root).",
        rich_help_panel=FILTER_PANEL,
    ),
]
OutputFile = Annotated[
    Path | None,
    typer.Option(
        "--output",
        metavar="FILE",
        help=(
            "Write the per-file results as JSON lines to FILE (atomically), or to standard "
            "output with '-' (the report then goes to standard error)."
        ),
        rich_help_panel=OUTPUT_PANEL,
        dir_okay=False,
        show_default=False,
    ),
]
JsonOutput = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout instead of tables.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        envvar="PRAVAH_QUIET",
        help="No progress bar.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Server = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="PRAVAH_SERVER",
        help="Base URL of a running `pravah serve`.",
    ),
]
DEFAULT_SERVER = "http://127.0.0.1:8000"
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="PRAVAH_API_KEY",
        help="API key sent as 'Authorization: Bearer'; prefer the variable (argv is visible).",
        show_default=False,
    ),
]
CaFile = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        envvar="PRAVAH_CA_FILE",
        help="CA bundle that signed the server's certificate (https:// servers).",
        show_default=False,
    ),
]
