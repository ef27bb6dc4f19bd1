"""Text from the files and the engine, made safe to show on a terminal.

Why: the CLI prints file names, CSV header cells and error messages that
anyone who can write a file chose. A name holding ``ESC [ 31 m``, or a
header cell holding ``ESC ] 52 ;`` (set the clipboard), would be obeyed by
the terminal rather than shown, and a newline in a name would make one
result look like two. Like ``ls`` and ``fd``, the CLI shows such bytes as
escapes instead (``\\x1b``, ``\\n``). Rich strips only a few control codes
itself, and ESC is not one of them.

Only what is shown changes: ``--json`` and ``--output`` keep the exact text.
"""

from __future__ import annotations

from rich.text import Text

__all__ = ["data", "visible"]

_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})


def visible(text: object) -> str:
    """`text` with every control character (C0, DEL, C1) written as an escape."""
    return str(text).translate(_ESCAPES)


def data(text: object, style: str = "") -> Text:
    """A table cell or line of outside text: escaped, and never read as markup."""
    return Text(visible(text), style=style)
