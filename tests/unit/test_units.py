"""Parsing of human sizes and datetimes used in filters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pravah.units import format_size, parse_datetime, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        (512, 512),
        ("100MB", 100_000_000),
        ("100 mb", 100_000_000),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("512k", 512_000),
        ("512KiB", 512 * 1024),
        ("2 TB", 2 * 1000**4),
        ("10B", 10),
        (".5k", 500),
    ],
)
def test_parse_size_accepts_decimal_and_binary_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "expected a number"),
        ("abc", "expected a number"),
        ("10 parsecs", "unknown unit 'parsecs'"),
        ("-5", "expected a number"),
        (-5, "cannot be negative"),
        ("1.2.3MB", "expected a number"),
        # Past 64 bits the job used to fail inside the gRPC client, retried 3 times.
        ("99999999999999999999999", "larger than any file can be"),
        (2**64, "larger than any file can be"),
        ("20000000TB", "larger than any file can be"),
    ],
)
def test_parse_size_rejects_bad_values_with_clear_message(text: str | int, needle: str) -> None:
    with pytest.raises(ValueError, match="invalid size") as info:
        parse_size(text)
    assert needle in str(info.value)


def test_parse_size_rejects_bool() -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(True)


def test_parse_datetime_forms_are_utc_aware() -> None:
    assert parse_datetime("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_datetime("2024-05-01T12:30:00Z") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    assert parse_datetime("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_datetime(datetime(2024, 5, 1, 12, tzinfo=plus2)).tzinfo == UTC
    assert parse_datetime(date(2024, 1, 2)) == datetime(2024, 1, 2, tzinfo=UTC)
    assert parse_datetime(datetime(2024, 1, 2, 3)) == datetime(2024, 1, 2, 3, tzinfo=UTC)


def test_parse_datetime_rejects_garbage_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"invalid datetime 'yesterday-ish'.*ISO 8601"):
        parse_datetime("yesterday-ish")
    # Valid ISO 8601, but in the year 10000 once in UTC: was an OverflowError.
    with pytest.raises(ValueError, match="out of range once in UTC"):
        parse_datetime("9999-12-31T23:00:00-05:00")


def test_format_size_uses_binary_units() -> None:
    assert format_size(10) == "10 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"


def test_parse_duration_reads_short_ages_and_leaves_other_text() -> None:
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration(" 90m ") == timedelta(minutes=90)
    assert parse_duration("1D") == timedelta(days=1)
    assert parse_duration("2w") == timedelta(weeks=2)
    for other in ("2024-05-01", "P1D", "1y", "1.5h", "-1d", ""):
        assert parse_duration(other) is None, other
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration("0h")
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_duration("99999999d")
