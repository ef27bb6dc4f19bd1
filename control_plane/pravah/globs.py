"""Which include/exclude globs the engine would refuse, known before a job exists.

Why: the engine compiles filters with the Rust `globset` crate, and only when
the job runs. A typo such as ``--include '[a'`` used to make a job, start an
engine and end `failed`; a user expects a usage error (exit 2, or 422 from
`POST /jobs`) and no job at all. This is globset 0.4's parser (the version in
Cargo.lock, with `literal_separator` and `backslash_escape` on, as
engine_service/src/filters.rs builds it) reduced to the cases it refuses, with
its wording. `tests/integration/test_engine_grpc.py` checks it agrees with the
real engine on a corpus of hostile globs, so a globset upgrade that changes the
grammar fails a test instead of drifting.
"""

from __future__ import annotations

# globset's bound on `{` nesting (MAX_ALTERNATES_DEPTH).
_MAX_ALTERNATES_DEPTH = 100
# POSIX classes globset expands inside brackets, e.g. `[[:digit:]]`; a name
# longer than this is not looked up.
_MAX_POSIX_NAME = 8


class _Refused(Exception):
    """A reason globset gives for refusing a glob."""


def glob_error(glob: str) -> str | None:
    """Why the engine would refuse `glob` (globset's own wording), or None."""
    try:
        _parse(glob)
    except _Refused as exc:
        return str(exc)
    return None


def _parse(glob: str) -> None:
    depth = 0
    i = 0
    while i < len(glob):
        c = glob[i]
        i += 1
        if c == "[":
            i = _parse_class(glob, i)
        elif c == "{":
            if depth >= _MAX_ALTERNATES_DEPTH:
                raise _Refused("alternate groups nested too deeply")
            depth += 1
        elif c == "}":
            if depth == 0:
                raise _Refused(
                    "unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)"
                )
            depth -= 1
        elif c == "\\":
            if i == len(glob):
                raise _Refused("dangling '\\'")
            i += 1
    if depth:
        raise _Refused("unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)")


def _parse_class(glob: str, i: int) -> int:
    """Checks the class opened just before `i`; returns the index after its `]`."""
    if i < len(glob) and glob[i] in "!^":
        i += 1
    first = True
    in_range = False
    # globset keeps a list of (start, end) ranges; a `-` extends the last one,
    # and the new end is checked against that range's start.
    last_start = ""
    while True:
        if i == len(glob):
            raise _Refused("unclosed character class; missing ']'")
        c = glob[i]
        i += 1
        if c == "]" and not first:
            return i
        if c == "-" and not first:
            if in_range:
                _check_range(last_start, "-")
            in_range = not in_range
        elif c == "[" and not in_range and glob.startswith(":", i):
            i, last_start = _posix_class(glob, i)
        elif in_range:
            _check_range(last_start, c)
            in_range = False
        else:
            last_start = c
        first = False


def _check_range(start: str, end: str) -> None:
    if end < start:
        raise _Refused(f"invalid range; '{start}' > '{end}'")


# The start of the last range each POSIX class adds, as globset expands them.
_POSIX_LAST_START = {
    "alnum": "a",
    "alpha": "a",
    "blank": " ",
    "cntrl": "\x7f",
    "digit": "0",
    "graph": "!",
    "lower": "a",
    "print": " ",
    "punct": "{",
    "space": " ",
    "upper": "A",
    "xdigit": "a",
}


def _posix_class(glob: str, i: int) -> tuple[int, str]:
    """Reads a `[` seen at `i - 1` and followed by `:`, inside a class.

    Returns where the class goes on and the start of the last range added.
    globset consumes `:name:]` when `name` is at most 8 lowercase ASCII
    letters (known or not; an unknown one adds `[`); otherwise the `[` is an
    ordinary member and nothing more is consumed.
    """
    j = i + 1
    name = ""
    while j < len(glob):
        c = glob[j]
        j += 1
        if c == ":" and glob.startswith("]", j):
            return j + 1, _POSIX_LAST_START.get(name, "[")
        if "a" <= c <= "z" and len(name) < _MAX_POSIX_NAME:
            name += c
            continue
        break
    return i, "["
