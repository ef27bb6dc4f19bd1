"""Parsing of human-friendly sizes, durations and datetimes used in job filters.

Why: users write `--min-size 100MB`, `--older-than 1d` or
`"modified_after": "2024-05-01"` in the CLI and in JSON bodies alike; one
parser keeps both front ends consistent and gives the same clear error for
the same mistake.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_DURATION_RE = re.compile(r"^\s*(?P<num>\d+)\s*(?P<unit>[smhdw])\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Longer is "forever" in all but name, and past year 9999 datetimes overflow.
MAX_DURATION = timedelta(days=100 * 365)

_SIZE_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")

# Decimal units are powers of 1000, binary ("i") units powers of 1024. A bare
# letter ("k", "M") is decimal, as in SI; "KiB" is binary.
_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "p": 1000**5,
    "pb": 1000**5,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
    "pi": 1024**5,
    "pib": 1024**5,
}


def parse_size(value: str | int) -> int:
    """Return a size in bytes from an int or a string like "100MB", "1.5GiB", "512k".

    Raises ValueError with a sentence naming the bad value and the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '100MB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: sizes cannot be negative")
        return _at_most_max(value, value)
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '100MB'")
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(
            f"invalid size {value!r}: expected a number with an optional unit, "
            "e.g. 512, '100MB', '1.5GiB' or '512k'"
        )
    unit = match.group("unit").lower()
    if unit not in _UNITS:
        raise ValueError(
            f"invalid size {value!r}: unknown unit {match.group('unit')!r}; "
            "use B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    number = float(match.group("num"))
    return _at_most_max(round(number * _UNITS[unit]), value)


# No file is larger: the engine's sizes are 64-bit, and a bigger bound
# failed the job inside the gRPC client instead of the request.
MAX_SIZE = 2**64 - 1


def _at_most_max(size: int, value: str | int) -> int:
    if size > MAX_SIZE:
        raise ValueError(f"invalid size {value!r}: larger than any file can be (16 EiB)")
    return size


def format_size(n: int | float) -> str:
    """Format a byte count for humans with binary units ("1.5 MiB")."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def parse_datetime(value: str | datetime | date) -> datetime:
    """Return a timezone-aware UTC datetime from ISO 8601 text, a date or a datetime.

    Naive values are taken as UTC. "2024-05-01" means midnight UTC that day.
    Raises ValueError naming the bad value.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"invalid datetime {value!r}: expected ISO 8601, "
                "e.g. '2024-05-01' or '2024-05-01T12:00:00Z'"
            ) from None
    else:
        raise ValueError(f"invalid datetime {value!r}: expected ISO 8601 text")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise ValueError(f"invalid datetime {value!r}: out of range once in UTC") from None


def parse_duration(text: str) -> timedelta | None:
    """'45s', '90m', '12h', '30d', '2w' as a timedelta; None for any other text.

    Raises ValueError for a duration of this form that is zero or longer
    than MAX_DURATION.
    """
    match = _DURATION_RE.match(text)
    if match is None:
        return None
    seconds = int(match.group("num")) * _DURATION_UNITS[match.group("unit").lower()]
    if seconds == 0:
        raise ValueError(f"invalid duration {text.strip()!r}: it must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {text.strip()!r}: longer than 100 years")
    return timedelta(seconds=seconds)
