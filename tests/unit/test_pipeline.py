"""Pipelines: CLI step building, pipeline files, chain validation and storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pravah.cli.options import CliUsageError, build_job_request, build_steps
from pravah.engine_client import Capabilities, TaskInfo
from pravah.errors import InvalidRequestError
from pravah.models import Job, JobCreate
from pravah.pipeline import max_error_ratio_of, steps_of, stored_spec, validate_steps


def _task(name: str, writes: bool) -> TaskInfo:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"width": {"type": "integer", "minimum": 1}},
    }
    return TaskInfo(name, "1", "", schema, {}, writes_files=writes)


CAPS = Capabilities(
    engine_version="0",
    tasks={
        t.name: t for t in [_task("extract", True), _task("thumbnail", True), _task("hash", False)]
    },
)


def test_repeated_tasks_take_options_by_task_name_or_step_number() -> None:
    steps = build_steps(["extract", "thumbnail"], ["thumbnail.width=64", "1.x=true"], None)
    assert steps == [
        {"task": "extract", "options": {"x": True}},
        {"task": "thumbnail", "options": {"width": 64}},
    ]
    assert build_steps(["hash"], ["algorithm=xxh3"], None) == [
        {"task": "hash", "options": {"algorithm": "xxh3"}}
    ]


@pytest.mark.parametrize(
    ("tasks", "options", "needle"),
    [
        (["extract", "thumbnail"], ["width=64"], "TASK.KEY=VALUE"),
        (["extract", "thumbnail"], ["resize.width=64"], "names no single step"),
        (["thumbnail", "thumbnail"], ["thumbnail.width=64"], "names no single step"),
        ([], [], "give a task"),
    ],
)
def test_ambiguous_or_missing_steps_are_usage_errors(
    tasks: list[str], options: list[str], needle: str
) -> None:
    with pytest.raises(CliUsageError, match=needle):
        build_steps(tasks, options, None)


def test_pipeline_file_yaml_list_or_steps_mapping(tmp_path: Path) -> None:
    listed = tmp_path / "a.yaml"
    listed.write_text("- extract\n- task: thumbnail\n  options: {width: 32}\n")
    mapped = tmp_path / "b.yml"
    mapped.write_text(
        '{"steps": [{"task": "extract"}, {"task": "thumbnail", "options": {"width": 32}}]}'
    )
    expected = [
        {"task": "extract", "options": {}},
        {"task": "thumbnail", "options": {"width": 32}},
    ]
    assert build_steps([], [], listed) == expected
    assert build_steps([], [], mapped) == expected
    body = build_job_request(
        source=str(tmp_path), pipeline_file=listed, destination="/out", max_error_ratio=0.2
    )
    assert body["pipeline"] == expected
    assert body["max_error_ratio"] == 0.2
    assert "task" not in body


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("steps: []\n", "non-empty list"),
        ("- {tsk: extract}\n", "needs a 'task'"),
        ("- {task: extract, opts: {}}\n", "unknown keys: opts"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_pipeline_files_are_usage_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(CliUsageError, match=needle):
        build_steps([], [], path)
    with pytest.raises(CliUsageError, match="either --task or --pipeline"):
        build_steps(["hash"], [], path)


def _billion_laughs() -> str:
    """Nine levels of nine aliases: 9**9 values once expanded, 1 kB as text."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    lines.append("steps: [{task: hash, options: {algorithm: *l8}}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (_billion_laughs().encode(), "expands to more than 10,000 values"),
        (b"- task: hash\n  options: {algorithm: \xff}\n", "is not UTF-8 text"),
        (b"- hash\n" + b"#" * (1 << 20), "is larger than 1 MiB"),
    ],
    ids=["yaml-alias-bomb", "not-utf8", "too-big"],
)
def test_hostile_pipeline_files_are_refused_before_use(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    """Each of these once hung the CLI or ended in a traceback."""
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(CliUsageError, match=needle):
        build_steps([], [], path)


def test_a_pipeline_file_that_is_a_folder_or_missing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliUsageError, match="cannot be read: Is a directory"):
        build_steps([], [], tmp_path)
    with pytest.raises(CliUsageError, match="cannot be read: No such file"):
        build_steps([], [], tmp_path / "missing.yaml")


def test_aliases_that_share_options_between_steps_still_work(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "common: &common {existing: skip}\n"
        "steps:\n"
        "  - {task: extract, options: *common}\n"
        "  - {task: thumbnail, options: {<<: *common, width: 64}}\n"
    )
    assert build_steps([], [], path) == [
        {"task": "extract", "options": {"existing": "skip"}},
        {"task": "thumbnail", "options": {"existing": "skip", "width": 64}},
    ]


def _create(body: dict[str, Any]) -> JobCreate:
    return JobCreate.model_validate({"source": "/d", **body})


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"pipeline": [{"task": "extract"}, {"task": "nope"}]}, "step 2 (nope): unknown task"),
        (
            {"pipeline": [{"task": "extract", "options": {"width": 0}}, {"task": "hash"}]},
            "step 1 (extract): invalid option 'width'",
        ),
        ({"pipeline": [{"task": "hash"}, {"task": "extract"}]}, "impossible pipeline"),
        # Named as unknown, not as a chain with a reader first.
        ({"pipeline": [{"task": "hash"}, {"task": "nope"}]}, "step 2 (nope): unknown task"),
        ({"pipeline": [{"task": "extract"}, {"task": "thumbnail"}]}, "needs a 'destination'"),
    ],
)
def test_chains_are_validated_as_a_whole(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        validate_steps(_create(body), CAPS, None)
    assert needle in str(info.value)


def test_a_writing_task_on_an_s3_source_needs_a_destination() -> None:
    s3_job = JobCreate.model_validate({"source": "s3://b/in", "task": "extract"})
    with pytest.raises(InvalidRequestError, match="source is on S3: give a 'destination'"):
        validate_steps(s3_job, CAPS, None)
    assert validate_steps(s3_job, CAPS, "s3://b/out")[0].task == "extract"
    reader = JobCreate.model_validate({"source": "s3://b/in", "task": "hash"})
    assert validate_steps(reader, CAPS, None)[0].task == "hash"


def test_storage_round_trip_keeps_single_tasks_as_before() -> None:
    single = _create({"task": "hash", "options": {"width": 1}})
    spec = stored_spec(single, validate_steps(single, CAPS, None))
    assert (spec.task, spec.options) == ("hash", {"width": 1})
    job = Job(task=spec.task, source="/d", options=spec.options)
    assert [s.task for s in steps_of(job)] == ["hash"]
    assert max_error_ratio_of(job) is None

    piped = _create({"pipeline": [{"task": "extract"}, {"task": "hash"}], "max_error_ratio": 0.5})
    spec = stored_spec(piped, validate_steps(piped, CAPS, None))
    job = Job(task=spec.task, source="/d", options=spec.options)
    assert spec.task == "pipeline"
    assert [s.task for s in steps_of(job)] == ["extract", "hash"]
    assert max_error_ratio_of(job) == 0.5
