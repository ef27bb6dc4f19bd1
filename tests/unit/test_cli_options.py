"""Unit tests of the CLI's pure parsing helpers (no processes, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pravah.cli.options import (
    CliUsageError,
    build_job_request,
    parse_option_value,
    parse_options,
    parse_size,
    resolve_source,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", 10),
        ("2.5", 2.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"10"', "10"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("hello", "hello"),
        ("", ""),
        (";", ";"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("a=b", "a=b"),
    ],
)
def test_option_values_are_json_when_they_parse_else_strings(raw: str, expected: object) -> None:
    assert parse_option_value(raw) == expected


def test_options_are_collected_into_one_object_and_split_on_the_first_equals() -> None:
    assert parse_options(["max_header_bytes=4096", "delimiter=;", "expr=a=b", "strict=true"]) == {
        "max_header_bytes": 4096,
        "delimiter": ";",
        "expr": "a=b",
        "strict": True,
    }


@pytest.mark.parametrize("bad", ["novalue", "=1", " =1", "bad key=1", "9lives=1"])
def test_malformed_option_is_a_usage_error_naming_it(bad: str) -> None:
    with pytest.raises(CliUsageError, match="--option"):
        parse_options([bad])


def test_option_given_twice_is_a_usage_error() -> None:
    with pytest.raises(CliUsageError, match="more than once"):
        parse_options(["a=1", "a=2"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("10KB", 10_000),
        ("1k", 1000),
        ("1MiB", 1024**2),
        ("1.5GB", 1_500_000_000),
    ],
)
def test_sizes_parse_human_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12XB", "abc", "-5", "", "1.2.3MB"])
def test_bad_size_is_a_usage_error_naming_the_flag_and_value(bad: str) -> None:
    with pytest.raises(CliUsageError) as info:
        parse_size(bad, flag="--min-size")
    assert "--min-size" in str(info.value)
    assert repr(bad) in str(info.value)


def test_local_source_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_source("data") == str(tmp_path / "data")
    assert resolve_source(f"file://{tmp_path / 'data'}") == str(tmp_path / "data")
    (tmp_path / "my data").mkdir()
    assert resolve_source(f"file://{tmp_path}/my%20data") == str(tmp_path / "my data")


def test_paths_sent_to_a_server_are_made_absolute_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pravah submit` does not check the source (it may exist only on the
    # server) but names it absolutely: the server refuses relative paths.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    request = build_job_request(
        source="only-on-server", task="compress", destination="~/out", check_source=False
    )
    assert request["source"] == str(tmp_path / "only-on-server")
    assert request["destination"] == str(tmp_path / "home" / "out")
    uris = build_job_request(
        source="s3://b/in", task="compress", destination="s3://b/out", check_source=False
    )
    assert (uris["source"], uris["destination"]) == ("s3://b/in", "s3://b/out")


def test_file_uri_naming_another_host_is_a_usage_error() -> None:
    with pytest.raises(CliUsageError, match="names the host 'server'"):
        resolve_source("file://server/data")


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliUsageError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"))


def test_file_source_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("a,b\n")
    with pytest.raises(CliUsageError, match="is a file, not a directory") as refused:
        resolve_source(str(tmp_path / "a.csv"))
    # ... and says how to process that one file.
    assert f"{tmp_path} --include a.csv" in str(refused.value)


def test_remote_uris_pass_unchecked() -> None:
    assert resolve_source("s3://bucket/prefix/") == "s3://bucket/prefix/"


def test_job_request_carries_only_what_was_set(tmp_path: Path) -> None:
    assert build_job_request(source=str(tmp_path), task="csv-header") == {
        "source": str(tmp_path),
        "task": "csv-header",
        "options": {},
    }


def test_job_request_carries_filters_options_and_destination(tmp_path: Path) -> None:
    request = build_job_request(
        source=str(tmp_path),
        task=" csv-header ",
        options=["max_header_bytes=100"],
        include=["**/*.csv"],
        exclude=["skip/**"],
        extensions=[".CSV", "tsv,txt"],
        min_size="1KB",
        max_size="2MiB",
        hidden=True,
        follow_symlinks=True,
        max_depth=3,
        destination="/tmp/out",
    )
    assert request == {
        "source": str(tmp_path),
        "task": "csv-header",
        "options": {"max_header_bytes": 100},
        "filters": {
            "include": ["**/*.csv"],
            "exclude": ["skip/**"],
            "extensions": ["csv", "tsv", "txt"],
            "min_size": 1000,
            "max_size": 2 * 1024**2,
            "include_hidden": True,
            "follow_symlinks": True,
            "max_depth": 3,
        },
        "destination": "/tmp/out",
    }


def test_min_size_above_max_size_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliUsageError, match="larger than"):
        build_job_request(source=str(tmp_path), task="t", min_size="2MB", max_size="1MB")


def test_job_request_validates_against_the_api_model(tmp_path: Path) -> None:
    from pravah.models import JobCreate

    request = build_job_request(
        source=str(tmp_path), task="csv-header", include=["*.csv"], min_size="1k", hidden=True
    )
    model = JobCreate.model_validate(request)
    assert model.filters.min_size == 1000
    assert model.filters.include_hidden is True


@pytest.mark.parametrize(
    ("sse", "key", "expected"),
    [
        ("aes256", None, {"mode": "sse-s3"}),
        ("AES256", None, {"mode": "sse-s3"}),
        ("sse-s3", None, {"mode": "sse-s3"}),
        ("aws:kms", None, {"mode": "sse-kms"}),
        ("aws:kms", "k-1", {"mode": "sse-kms", "kms_key_id": "k-1"}),
        (None, "k-1", {"mode": "sse-kms", "kms_key_id": "k-1"}),
    ],
)
def test_sse_flags_become_the_jobs_encryption(
    sse: str | None, key: str | None, expected: dict[str, str]
) -> None:
    from pravah.models import JobCreate

    request = build_job_request(
        source="s3://b/in", task="compress", destination="s3://b/out", sse=sse, sse_kms_key_id=key
    )
    assert request["encryption"] == expected
    assert JobCreate.model_validate(request).encryption is not None


@pytest.mark.parametrize(
    ("sse", "key", "destination", "message"),
    [
        ("rot13", None, "s3://b/out", "--sse must be aes256 or aws:kms"),
        ("aes256", "k-1", "s3://b/out", "--sse-kms-key-id goes with --sse aws:kms"),
        ("aes256", None, "/tmp/out", "applies to objects written to an s3:// --dest"),
        ("aes256", None, None, "applies to objects written to an s3:// --dest"),
    ],
)
def test_bad_sse_flags_are_usage_errors(
    sse: str, key: str | None, destination: str | None, message: str
) -> None:
    with pytest.raises(CliUsageError, match=message):
        build_job_request(
            source="s3://b/in",
            task="compress",
            destination=destination,
            sse=sse,
            sse_kms_key_id=key,
        )
