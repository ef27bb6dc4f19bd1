"""Pipelines: a job as ordered steps, each step's outputs the next one's inputs.

Why a module of its own: the API, the CLI and the runner must agree on what
a pipeline is, how it is validated and how it is stored.

Validation (before anything is stored): every step's task exists and its
options match the task's schema; every step but the last writes files (a
step that writes nothing gives the next one no input); a pipeline of several
steps whose last step writes files needs a destination (else its outputs
would stay in the job's workspace).

Storage, without a schema change: a single task with no error ratio is
stored as before (``task`` and its ``options``). Anything else is stored with
``task = "pipeline"`` and ``options = {"steps": [...], "max_error_ratio": r}``;
:func:`steps_of` and :func:`max_error_ratio_of` read both forms back.

Running (see :mod:`pravah.runner`): step 1 lists the job's source with the
job's filters; step N writes into ``workspace/steps/N`` and step N+1 lists
that folder whole; the last step writes to the job's destination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pravah.engine_client import Capabilities
from pravah.errors import InvalidRequestError
from pravah.models import Job, JobCreate, PipelineStep

PIPELINE_TASK = "pipeline"


@dataclass(frozen=True)
class StoredJobSpec:
    """The ``task`` and ``options`` columns for a job request."""

    task: str
    options: dict[str, Any]


def validate_steps(
    data: JobCreate, capabilities: Capabilities, destination: str | None
) -> list[PipelineStep]:
    """The request's steps, checked as a whole; InvalidRequestError names the bad step."""
    from pravah.jobs import get_task, validate_options

    steps = data.steps()
    several = len(steps) > 1
    from_s3 = data.source.strip().startswith("s3://")
    infos = []
    # Every step on its own first: an unknown task is named as such, not
    # reported as a chain that cannot work.
    for i, step in enumerate(steps, start=1):
        where = f"step {i} ({step.task}): " if several else ""
        try:
            info = get_task(capabilities, step.task)
            validate_options(info, step.options)
        except InvalidRequestError as exc:
            # A single task keeps the field the form shows it next to; a
            # pipeline's error belongs to its step.
            field = f"pipeline.{i - 1}" if several else exc.field
            raise InvalidRequestError(f"{where}{exc}", field=field) from None
        infos.append(info)
    for i, (step, info) in enumerate(zip(steps, infos, strict=True), start=1):
        if i < len(steps) and not info.writes_files:
            nxt = steps[i].task
            raise InvalidRequestError(
                f"impossible pipeline: step {i} ({step.task}) writes no files, so step "
                f"{i + 1} ({nxt}) would have no input; put {step.task!r} last"
            )
        if several and i == len(steps) and info.writes_files and not destination:
            raise InvalidRequestError(
                f"a pipeline whose last step ({step.task}) writes files needs a 'destination'"
            )
        if i == len(steps) and info.writes_files and not destination and from_s3:
            # Outputs go next to local inputs; an object store has no "next to".
            raise InvalidRequestError(
                f"{step.task!r} writes files and the source is on S3: give a 'destination' "
                "(a local folder or s3://bucket/prefix)",
                field="destination",
            )
    return steps


def stored_spec(data: JobCreate, steps: list[PipelineStep]) -> StoredJobSpec:
    """How a validated request is stored (see the module doc)."""
    if data.pipeline is None and data.max_error_ratio is None:
        return StoredJobSpec(task=steps[0].task, options=dict(steps[0].options))
    options: dict[str, Any] = {"steps": [s.model_dump() for s in steps]}
    if data.max_error_ratio is not None:
        options["max_error_ratio"] = data.max_error_ratio
    return StoredJobSpec(task=PIPELINE_TASK, options=options)


def steps_of(job: Job) -> list[PipelineStep]:
    """A stored job's steps."""
    if job.task == PIPELINE_TASK:
        raw = (job.options or {}).get("steps") or []
        return [PipelineStep.model_validate(s) for s in raw]
    return [PipelineStep(task=job.task, options=job.options or {})]


def max_error_ratio_of(job: Job) -> float | None:
    """A stored job's error ratio, or None (failed files never fail the job)."""
    if job.task != PIPELINE_TASK:
        return None
    value = (job.options or {}).get("max_error_ratio")
    return float(value) if value is not None else None
