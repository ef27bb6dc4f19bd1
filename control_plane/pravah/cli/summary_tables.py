"""A task's summary as tables a person reads at the end of `pravah run`.

Why generic: every task's summary is the same shape (engine capabilities
declare it per task): a few totals, lists of flat rows (duplicate groups,
files by extension, largest files) and the listing's own counters. Printed
as JSON it asked the reader to parse it; drawn from that shape it needs no
per-task code, so a new task's summary shows up readable without a change
here. csv-header's schema table stays in ``render`` (it folds column lists).

Byte counts are shown in decimal units (``ls -l --si``), totals with the
exact count beside them; digests are cut to 12 hex digits, as ``git log
--oneline`` cuts commits. A script wants ``--json``, which has them whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from pravah.cli.visible import data

__all__ = ["MAX_ROWS", "render_task_summary"]

MAX_ROWS = 10  # of each list; the rest are counted, and --json has them all
# The listing's counters repeat the totals (its problems get a line), and
# the first failures are printed from the results by ``render``.
SKIPPED_KEYS = frozenset({"listing", "failures"})
DIGEST_SHOWN = 12  # hex digits of a digest, as `git log --oneline` shows commits
HEX = frozenset("0123456789abcdef")


def _is_bytes(key: str) -> bool:
    return key in {"bytes", "size"} or key.startswith("bytes_") or key.endswith("_bytes")


def _cell(key: str, value: Any, *, exact: bool = True) -> str:
    """`value` for a person; byte counts humanized (`exact`: and given whole)."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        if not _is_bytes(key):
            return f"{value:,}"
        if value < 1000 or not exact:
            return decimal(value)
        return f"{decimal(value)} ({value:,} bytes)"
    if isinstance(value, float):
        return f"{value:,.3g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    if not text and key == "extension":  # files named without one (Makefile)
        return "(none)"
    if len(text) >= 32 and set(text) <= HEX:  # a digest (sha256, blake3)
        return text[:DIGEST_SHOWN] + "…"
    return text


def _title(key: str) -> str:
    return key.replace("_", " ")


def _rows_table(key: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    columns: list[str] = []
    for row in rows[:MAX_ROWS]:
        # Nested objects (a pipeline step's own summary) would not fit a cell.
        columns += [c for c, v in row.items() if c not in columns and not isinstance(v, Mapping)]
    more = len(rows) - MAX_ROWS
    table = Table(
        title=data(_title(key)),
        title_justify="left",
        caption=Text(f"and {more:,} more (--json or --output list them all)") if more > 0 else None,
        caption_justify="left",
    )
    for column in columns:
        numeric = any(isinstance(r.get(column), int | float) for r in rows[:MAX_ROWS])
        table.add_column(
            data(_title(column)), justify="right" if numeric else "left", overflow="fold"
        )
    for row in rows[:MAX_ROWS]:
        table.add_row(*(data(_cell(c, row.get(c), exact=False)) for c in columns))
    return table


def render_task_summary(console: Console, summary: Mapping[str, Any]) -> None:
    """Totals as a two-column table, then one table per list of rows."""
    totals = Table(show_header=False, box=None, pad_edge=False)
    totals.add_column(style="bold")
    totals.add_column(overflow="fold")
    lists: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in summary.items():
        if key in SKIPPED_KEYS:
            continue
        if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
            lists.append((key, value))
        elif isinstance(value, Mapping):
            for inner, v in value.items():
                if not isinstance(v, Mapping | list):
                    totals.add_row(data(f"{_title(key)} {_title(inner)}"), data(_cell(inner, v)))
        elif not (isinstance(value, list) and not value):
            totals.add_row(data(_title(key)), data(_cell(key, value)))
    console.print(totals)
    for key, rows in lists:
        console.print(_rows_table(key, rows))
    render_listing_problems(console, summary)


def render_listing_problems(console: Console, summary: Mapping[str, Any]) -> None:
    """One line for entries the listing could not read or follow, if any."""
    listing = summary.get("listing")
    if isinstance(listing, Mapping) and listing.get("errors"):
        examples = listing.get("error_examples") or []
        first = examples[0] if examples and isinstance(examples[0], Mapping) else {}
        shown = f", e.g. {first.get('path')}: {first.get('message')}" if first else ""
        text = f"listing: {listing['errors']:,} entries could not be read{shown}"
        console.print(data(text, style="yellow"))
