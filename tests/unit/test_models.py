"""JobCreate / JobFilters validation and the public progress view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pravah.models import Job, JobCreate, JobFilters, JobPublic, JobStatus
from pydantic import ValidationError


def test_job_create_minimal() -> None:
    job = JobCreate.model_validate({"source": "/data", "task": "csv-header"})
    assert job.options == {}
    assert job.filters == JobFilters()


def test_job_create_rejects_extra_fields() -> None:
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        JobCreate.model_validate({"source": "/d", "task": "csv-header", "urgency": 3})


def test_job_filters_reject_unknown_filter() -> None:
    with pytest.raises(ValidationError):
        JobCreate.model_validate(
            {"source": "/d", "task": "csv-header", "filters": {"glob": "*.csv"}}
        )


def test_pipeline_steps_are_validated_in_shape() -> None:
    job = JobCreate.model_validate(
        {"source": "/d", "pipeline": [{"task": "extract"}, {"task": "thumbnail"}]}
    )
    assert [s.task for s in job.steps()] == ["extract", "thumbnail"]
    for bad, message in [
        ({"pipeline": []}, "at least one step"),
        ({"pipeline": [{"task": "x"}], "task": "x"}, "not both"),
        ({"pipeline": [{"task": "x"}], "options": {"a": 1}}, "inside each step"),
        ({"pipeline": [{"task": "x", "colour": 1}]}, "Extra inputs"),
        ({"task": "x", "max_error_ratio": 1.5}, "less than or equal to 1"),
    ]:
        with pytest.raises(ValidationError, match=message):
            JobCreate.model_validate({"source": "/d", **bad})


def test_task_is_required_without_pipeline() -> None:
    with pytest.raises(ValidationError, match="'task' is required"):
        JobCreate.model_validate({"source": "/d"})


def test_filters_parse_human_sizes_and_dates() -> None:
    filters = JobFilters.model_validate(
        {
            "min_size": "1KiB",
            "max_size": "1.5GB",
            "modified_after": "2024-01-01",
            "extensions": [".CSV", "tsv"],
        }
    )
    assert filters.min_size == 1024
    assert filters.max_size == 1_500_000_000
    assert filters.modified_after == datetime(2024, 1, 1, tzinfo=UTC)
    assert filters.extensions == ["csv", "tsv"]


@pytest.mark.parametrize(
    ("filters", "needle"),
    [
        ({"min_size": "lots"}, "invalid size 'lots'"),
        ({"max_size": "5 parsecs"}, "unknown unit"),
        ({"min_size": -1}, "cannot be negative"),
        ({"min_size": "2MB", "max_size": "1MB"}, "larger than max_size"),
        ({"modified_after": "not a date"}, "invalid datetime"),
        ({"modified_after": "2024-02-01", "modified_before": "2024-01-01"}, "earlier than"),
        ({"max_depth": -1}, "greater than or equal to 0"),
        ({"max_depth": 2**32}, "less than or equal to 4294967295"),
        ({"max_size": 2**64}, "larger than any file can be"),
        ({"modified_before": "9999-12-31T23:00:00-05:00"}, "out of range once in UTC"),
        ({"min_age": "1y"}, "invalid age '1y'"),
        ({"min_age": "0d"}, "longer than zero"),
        ({"max_age": -60}, "longer than zero"),
        ({"min_age": "2d", "max_age": "1d"}, "min_age is longer than max_age"),
        ({"include": ["*.csv", "*.{csv"]}, 'invalid glob "*.{csv": unclosed alternate group'),
        ({"exclude": ["a}"]}, 'invalid glob "a}": unopened alternate group'),
    ],
)
def test_bad_filters_give_clear_messages(filters: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate({"source": "/d", "task": "csv-header", "filters": filters})
    assert needle in str(info.value)


def test_public_progress_has_rate_and_eta_while_running() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    job = Job(
        task="csv-header",
        source="/d",
        status=JobStatus.running.value,
        started_at=start,
        files_total=100,
        bytes_total=1000,
        files_done=50,
        files_failed=10,
        bytes_done=500,
        bytes_failed=100,
    )
    public = JobPublic.from_job(job, now=start + timedelta(seconds=10))
    assert public.progress.percent == 50.0
    assert public.progress.bytes_per_second == 50.0
    assert public.progress.files_per_second == 5.0
    assert public.progress.eta_seconds == 10.0


def test_public_progress_counts_files_when_the_listing_has_no_sizes() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    job = Job(
        task="csv-header",
        source="/d",
        status=JobStatus.running.value,
        started_at=start,
        files_total=100,
        bytes_total=None,
        files_done=25,
        bytes_done=123456,
    )
    public = JobPublic.from_job(job, now=start + timedelta(seconds=10))
    assert public.progress.percent == 25.0
    assert public.progress.eta_seconds == 30.0


def test_public_progress_unknown_totals_before_listing() -> None:
    job = Job(task="csv-header", source="/d", status=JobStatus.pending.value)
    public = JobPublic.from_job(job)
    assert public.progress.percent is None
    assert public.progress.eta_seconds is None
    assert public.status == JobStatus.pending


def test_ages_become_modification_times_counted_back_from_the_job() -> None:
    created = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    filters = JobFilters.model_validate(
        {"min_age": "1d", "max_age": "P7D", "modified_before": "2026-11-20"}
    )
    # Stored as ISO 8601 durations, read back the same (a schedule's template).
    assert JobFilters.model_validate(filters.model_dump(mode="json")) == filters
    resolved = filters.resolved(created)
    # The earlier bound of the two "before"s wins, as both must hold.
    assert resolved.modified_before == datetime(2026, 11, 20, tzinfo=UTC)
    assert resolved.modified_after == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert resolved.min_age is None and resolved.max_age is None
    assert JobFilters().resolved(created) == JobFilters()
