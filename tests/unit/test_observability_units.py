"""Unit checks of the control plane's metrics, HTTP middleware and log context."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from pravah import metrics, telemetry
from pravah.log import add_trace_context, configure_logging, get_logger
from prometheus_client.parser import text_string_to_metric_families


def _value(name: str, **labels: str) -> float:
    text = metrics.render()[0].decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def test_http_latency_is_labelled_by_route_template_not_path() -> None:
    app = FastAPI()
    router = APIRouter(prefix="/things")

    @router.get("/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(router)
    app.add_middleware(telemetry.HttpObservabilityMiddleware, router=app.router)
    labels = {"method": "GET", "route": "/things/{thing_id}", "status": "200"}
    before = _value("pravah_http_request_duration_seconds_count", **labels)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/things/a1")).status_code == 200
        assert (await client.get("/things/b2")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
    assert _value("pravah_http_request_duration_seconds_count", **labels) == before + 2
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert _value("pravah_http_request_duration_seconds_count", **unmatched) >= 1


def test_job_outcomes_count_by_task_and_record_durations() -> None:
    task = "unit-test-task"
    metrics.job_created(task)
    # Outcome series exist at 0 as soon as the task is seen.
    assert _value("pravah_jobs_failed_total", task=task) == 0
    start = datetime(2025, 1, 1, tzinfo=UTC)
    metrics.job_started(task, start, start + timedelta(seconds=3))
    metrics.job_ended(task, "completed", start, start + timedelta(seconds=12))
    metrics.job_ended(task, "cancelled", None, start)
    assert _value("pravah_jobs_created_total", task=task) == 1
    assert _value("pravah_jobs_completed_total", task=task) == 1
    assert _value("pravah_jobs_cancelled_total", task=task) == 1
    assert _value("pravah_job_queue_seconds_sum", task=task) == 3
    assert _value("pravah_job_duration_seconds_sum", task=task, status="completed") == 12


def test_log_lines_carry_the_current_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("s") as span:
        event = add_trace_context(None, "info", {"event": "x"})
    assert event["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert event["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in add_trace_context(None, "info", {"event": "y"})


def test_json_log_lines_have_timestamp_level_message_and_bound_job_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_logs=True)
    try:
        get_logger("t").bind(job_id="j-1").info("job finished", files=3)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        logging.getLogger().handlers = []
    assert line["event"] == "job finished"
    assert line["job_id"] == "j-1"
    assert line["level"] == "info"
    assert "timestamp" in line


def test_local_engine_does_not_inherit_the_control_planes_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert telemetry.engine_child_env() is None
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-api")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    env = telemetry.engine_child_env()
    assert env is not None
    assert "OTEL_SERVICE_NAME" not in env
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.otlp_configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert telemetry.otlp_configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.otlp_configured()


def test_disabled_metrics_record_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pravah run` turns metrics off: its process serves no /metrics."""
    task = f"off-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(metrics, "_enabled", False)
    metrics.job_created(task)
    metrics.job_ended(task, "completed", None, None)
    metrics.engine_call("List", "ok")
    assert task not in metrics.render()[0].decode()
