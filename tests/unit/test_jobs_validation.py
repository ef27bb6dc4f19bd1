"""Job validation against engine capabilities and the local file system."""

from __future__ import annotations

from pathlib import Path

import pytest
from pravah.engine_client import Capabilities, TaskInfo
from pravah.errors import InvalidRequestError
from pravah.jobs import get_task, resolve_source, validate_options
from pravah.sandbox import check_destination
from pravah.settings import Settings

CAPS = Capabilities(
    engine_version="0.0.0",
    tasks={
        "csv-header": TaskInfo(
            name="csv-header",
            version="1",
            description="",
            options_schema={
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "delimiter": {"type": "string", "maxLength": 1},
                    "max_header_bytes": {"type": "integer", "minimum": 1},
                },
            },
            result_schema={},
        )
    },
)


def test_unknown_task_lists_available_tasks() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"unknown task 'nope'; available tasks: csv-header"
    ):
        get_task(CAPS, "nope")


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidRequestError) as info:
        validate_options(CAPS.tasks["csv-header"], {"colour": "red"})
    assert "unknown option 'colour'" in str(info.value)
    assert "delimiter" in str(info.value)


def test_bad_option_value_names_the_option() -> None:
    with pytest.raises(InvalidRequestError, match=r"invalid option 'max_header_bytes'"):
        validate_options(CAPS.tasks["csv-header"], {"max_header_bytes": "big"})


def test_valid_options_pass() -> None:
    validate_options(CAPS.tasks["csv-header"], {"delimiter": ";", "max_header_bytes": 10})


def test_source_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist"):
        resolve_source(str(tmp_path / "missing"))


def test_source_must_be_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "f.csv"
    f.write_text("a\n")
    with pytest.raises(InvalidRequestError, match="is not a directory"):
        resolve_source(str(f))


def test_source_file_uri_and_dotdot_are_resolved(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert resolve_source(f"file://{tmp_path}/a") == tmp_path / "a"
    assert resolve_source(str(tmp_path / "a" / "b" / "..")) == tmp_path / "a"


def test_relative_paths_and_remote_file_uris_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folder exists under the service's working directory and home: a
    # relative path must still not be read against them.
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for relative in ("data", "./data", "~/data", "file:data"):
        with pytest.raises(InvalidRequestError, match="is a relative path; give an absolute"):
            resolve_source(relative)
    with pytest.raises(InvalidRequestError, match="names the host 'server'"):
        resolve_source(f"file://server{tmp_path}/data")
    assert resolve_source(f"file://localhost{tmp_path}/data") == tmp_path / "data"
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(InvalidRequestError, match="destination 'out' is a relative path"):
        check_destination("out", tmp_path / "data", settings)


def test_source_outside_roots_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "root" / "data").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    roots = [tmp_path / "root"]
    assert resolve_source(str(tmp_path / "root" / "data"), roots) == tmp_path / "root" / "data"
    with pytest.raises(InvalidRequestError, match="outside the allowed roots"):
        resolve_source(str(tmp_path / "root" / "data" / ".." / ".." / "other"), roots)


def test_unsupported_scheme_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="ftp:// scheme"):
        resolve_source("ftp://host/x")


def test_s3_sources_are_normalized_and_may_not_hold_dot_segments() -> None:
    assert resolve_source("s3://bucket/a/b/", buckets=["bucket"]) == "s3://bucket/a/b"
    assert resolve_source("s3://bucket", buckets=["bucket"]) == "s3://bucket/"
    for bad in ("s3://bucket/a/../b", "s3://bucket/a//b", "s3://bucket/./a"):
        with pytest.raises(InvalidRequestError, match=r"'\.\.' or empty segments"):
            resolve_source(bad, buckets=["bucket"])


def test_s3_bucket_must_be_allowed() -> None:
    with pytest.raises(InvalidRequestError, match="bucket 'other' is not allowed"):
        resolve_source("s3://other/prefix", buckets=["bucket"])
    with pytest.raises(InvalidRequestError, match="set PRAVAH_ALLOWED_BUCKETS"):
        resolve_source("s3://bucket/prefix")


def test_no_options_still_meet_a_schema_that_requires_one() -> None:
    """Regression: the shortcut for `{}` (no jsonschema) must not skip `required`."""
    task = TaskInfo(
        name="needs-level",
        version="1",
        description="",
        options_schema={
            "type": "object",
            "required": ["level"],
            "properties": {"level": {"type": "integer"}},
        },
        result_schema={},
    )
    with pytest.raises(InvalidRequestError):
        validate_options(task, {})
    validate_options(task, {"level": 3})


def test_no_options_pass_a_plain_object_schema() -> None:
    validate_options(CAPS.tasks["csv-header"], {})
