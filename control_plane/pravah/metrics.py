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

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

JOBS_CREATED = Counter(
    "pravah_jobs_created", "Jobs accepted and queued", ["task"], registry=REGISTRY
)
JOBS_COMPLETED = Counter(
    "pravah_jobs_completed", "Jobs that ended completed", ["task"], registry=REGISTRY
)
JOBS_FAILED = Counter("pravah_jobs_failed", "Jobs that ended failed", ["task"], registry=REGISTRY)
JOBS_CANCELLED = Counter(
    "pravah_jobs_cancelled", "Jobs that ended cancelled", ["task"], registry=REGISTRY
)
JOBS_QUEUED = Gauge(
    "pravah_jobs_queued", "Jobs waiting for a worker (pending), at scrape time", registry=REGISTRY
)
JOBS_RUNNING = Gauge(
    "pravah_jobs_running", "Jobs running on any worker, at scrape time", registry=REGISTRY
)
JOB_DURATION = Histogram(
    "pravah_job_duration_seconds",
    "Time from a job's start to its end",
    ["task", "status"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
JOB_QUEUE_TIME = Histogram(
    "pravah_job_queue_seconds",
    "Time a job waited in the queue before its first start",
    ["task"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "pravah_http_request_duration_seconds",
    "HTTP request latency by method, route template and status",
    ["method", "route", "status"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)
ENGINE_CALLS = Counter(
    "pravah_engine_calls",
    "gRPC calls to engines by method and result (ok or the gRPC status code)",
    ["method", "result"],
    registry=REGISTRY,
)

_ENDED = {"completed": JOBS_COMPLETED, "failed": JOBS_FAILED, "cancelled": JOBS_CANCELLED}


def job_created(task: str) -> None:
    """Count a queued job; its task's outcome series start at 0 (so rate() sees them)."""
    JOBS_CREATED.labels(task=task).inc()
    for counter in _ENDED.values():
        counter.labels(task=task)


def job_started(task: str, created_at: datetime, started_at: datetime) -> None:
    """Record the queue time of a job's first start."""
    JOB_QUEUE_TIME.labels(task=task).observe(max(0.0, (started_at - created_at).total_seconds()))


def job_ended(
    task: str, status: str, started_at: datetime | None, finished_at: datetime | None
) -> None:
    """Count a job that reached a terminal status, with its run time if it ran."""
    counter = _ENDED.get(status)
    if counter is None:
        return
    counter.labels(task=task).inc()
    if started_at is not None and finished_at is not None:
        JOB_DURATION.labels(task=task, status=status).observe(
            max(0.0, (finished_at - started_at).total_seconds())
        )


def render() -> tuple[bytes, str]:
    """The text exposition and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
