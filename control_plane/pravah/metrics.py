"""Prometheus metrics of the control plane, served at `GET /metrics`.

Why one module: every metric is declared once here with its help text, so the
API, the worker, the runner and the engine client count into the same
registry and the Grafana dashboard (deploy/grafana/) has one list to follow.
Names follow Prometheus conventions (`_total` counters, `_seconds` durations)
and are prefixed `pravah_`:

- `pravah_jobs_created_total{task}`, `pravah_jobs_completed_total{task}`,
  `pravah_jobs_failed_total{task}`, `pravah_jobs_cancelled_total{task}`;
- `pravah_jobs_queued` (pending jobs in the store) and `pravah_jobs_running`,
  read from the job store at scrape time, so every instance reports the
  shared queue;
- `pravah_job_duration_seconds{task,status}` (started to finished) and
  `pravah_job_queue_seconds{task}` (created to first start);
- `pravah_http_request_duration_seconds{method,route,status}` by route
  template (`/jobs/{job_id}`), never by raw path;
- `pravah_engine_calls_total{method,result}` (result: `ok` or the gRPC code).

Counts are per process; with several instances, sum them in PromQL.
"""

from __future__ import annotations

import functools
from datetime import datetime
from types import SimpleNamespace
from typing import Any

_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# `pravah run` turns recording off (disable()): its process serves no
# /metrics and ends with the job, so prometheus_client is not even imported
# there. Servers and workers keep the default.
_enabled = True


def disable() -> None:
    """Record nothing from now on (a process that never serves /metrics)."""
    global _enabled
    _enabled = False


@functools.cache
def _collectors() -> SimpleNamespace:
    """The registry and every collector, made on first use (prometheus_client loads then)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    ns = SimpleNamespace(
        REGISTRY=registry,
        JOBS_CREATED=Counter(
            "pravah_jobs_created", "Jobs accepted and queued", ["task"], registry=registry
        ),
        JOBS_COMPLETED=Counter(
            "pravah_jobs_completed", "Jobs that ended completed", ["task"], registry=registry
        ),
        JOBS_FAILED=Counter(
            "pravah_jobs_failed", "Jobs that ended failed", ["task"], registry=registry
        ),
        JOBS_CANCELLED=Counter(
            "pravah_jobs_cancelled", "Jobs that ended cancelled", ["task"], registry=registry
        ),
        JOBS_QUEUED=Gauge(
            "pravah_jobs_queued",
            "Jobs waiting for a worker (pending), at scrape time",
            registry=registry,
        ),
        JOBS_RUNNING=Gauge(
            "pravah_jobs_running", "Jobs running on any worker, at scrape time", registry=registry
        ),
        JOB_DURATION=Histogram(
            "pravah_job_duration_seconds",
            "Time from a job's start to its end",
            ["task", "status"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        ),
        JOB_QUEUE_TIME=Histogram(
            "pravah_job_queue_seconds",
            "Time a job waited in the queue before its first start",
            ["task"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        ),
        HTTP_REQUEST_DURATION=Histogram(
            "pravah_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        ),
        ENGINE_CALLS=Counter(
            "pravah_engine_calls",
            "gRPC calls to engines by method and result (ok or the gRPC status code)",
            ["method", "result"],
            registry=registry,
        ),
    )
    ns.ENDED = {
        "completed": ns.JOBS_COMPLETED,
        "failed": ns.JOBS_FAILED,
        "cancelled": ns.JOBS_CANCELLED,
    }
    return ns


def __getattr__(name: str) -> Any:
    """`metrics.REGISTRY`, `metrics.ENGINE_CALLS`, ...: the collectors, made on first use."""
    if name.isupper() and not name.startswith("_"):
        try:
            return getattr(_collectors(), name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def job_created(task: str) -> None:
    """Count a queued job; its task's outcome series start at 0 (so rate() sees them)."""
    if not _enabled:
        return
    m = _collectors()
    m.JOBS_CREATED.labels(task=task).inc()
    for counter in m.ENDED.values():
        counter.labels(task=task)


def job_started(task: str, created_at: datetime, started_at: datetime) -> None:
    """Record the queue time of a job's first start."""
    if not _enabled:
        return
    _collectors().JOB_QUEUE_TIME.labels(task=task).observe(
        max(0.0, (started_at - created_at).total_seconds())
    )


def job_ended(
    task: str, status: str, started_at: datetime | None, finished_at: datetime | None
) -> None:
    """Count a job that reached a terminal status, with its run time if it ran."""
    if not _enabled:
        return
    m = _collectors()
    counter = m.ENDED.get(status)
    if counter is None:
        return
    counter.labels(task=task).inc()
    if started_at is not None and finished_at is not None:
        m.JOB_DURATION.labels(task=task, status=status).observe(
            max(0.0, (finished_at - started_at).total_seconds())
        )


def render() -> tuple[bytes, str]:
    """The text exposition and its content type."""
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_collectors().REGISTRY), CONTENT_TYPE_LATEST


def engine_call(method: str, result: str) -> None:
    """Count one engine RPC by method and result (`ok` or the gRPC code, lower case)."""
    if _enabled:
        _collectors().ENGINE_CALLS.labels(method=method, result=result).inc()


def http_request(method: str, route: str, status: str, seconds: float) -> None:
    """Observe one HTTP request's latency by route template."""
    if _enabled:
        _collectors().HTTP_REQUEST_DURATION.labels(
            method=method, route=route, status=status
        ).observe(seconds)
