"""One job observed end to end: traces, metrics and logs of both processes.

One scenario (module fixture) runs a real engine and a real `pravah serve`
as subprocesses, both exporting spans over OTLP to a receiver the test
starts, submits one job over REST, scrapes both `/metrics` endpoints during
and after it, then stops both processes (which flushes their spans). The
tests below check what an operator relies on:

- one job is one trace, parent to child across the process boundary, with
  the right service names and semantic-convention attributes;
- the Prometheus counters of both processes equal the job's own counts;
- every log line of both processes is JSON, and lines about the job carry
  its id (and its trace id).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_harness import AUTH, PRAVAH, clean_env, free_port, make_cli_tree
from otlp_receiver import OtlpReceiver, ReceivedSpan
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

pytestmark = pytest.mark.e2e

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
RPC_SERVICE = "pravah.engine.v1.EngineService"
CHUNK_FILES = 1000  # small chunks, so one job makes several Process calls


def _samples(families: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in families:
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Observed:
    job: dict[str, Any]
    spans: list[ReceivedSpan]
    engine_metrics: dict[Any, float]
    cp_metrics: dict[Any, float]
    engine_metrics_during: list[dict[Any, float]] = field(default_factory=list)
    cp_metrics_during: list[dict[Any, float]] = field(default_factory=list)
    engine_log: list[str] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)


def _start_engine(
    engine_bin: Path, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[str], str, str]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(engine_bin), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    second = proc.stdout.readline().strip()
    # The launcher contract: the first line is exactly `listening on <addr>`.
    assert first.startswith("listening on "), (first, log.read_text())
    assert second.startswith("metrics on "), (second, log.read_text())
    return proc, first.removeprefix("listening on "), second.removeprefix("metrics on ")


def _wait_ready(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"pravah serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"pravah serve not ready in 60 s:\n{log.read_text()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("process ignored its stop signal") from None


@pytest.fixture(scope="module")
def observed(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("observability")
    data = make_cli_tree(tmp / "data")
    # Enough files for several chunks and batches (2,507 files in all).
    bulk = data / "bulk"
    bulk.mkdir()
    for i in range(2500):
        (bulk / f"f{i:04d}.csv").write_text("id,value\n1,2\n")

    with OtlpReceiver() as receiver:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        base = clean_env()
        for key in list(base):
            if key.startswith("OTEL_"):
                del base[key]
        engine_log = tmp / "engine.log"
        engine, engine_addr, metrics_addr = _start_engine(
            engine_bin, {**base, **otel, "LOG_LEVEL": "info"}, engine_log
        )
        server_log = tmp / "serve.log"
        port = free_port()
        work = tmp / "cwd"
        work.mkdir()
        env = {
            **base,
            **otel,
            "PRAVAH_STATE_DIR": str(tmp / "state"),
            "PRAVAH_ENGINE_URLS": engine_addr,
            "PRAVAH_POLL_INTERVAL": "0.1",
            "PRAVAH_PROGRESS_PERSIST_INTERVAL": "0.1",
            "PRAVAH_CHUNK_FILES": str(CHUNK_FILES),
            "LOG_LEVEL": "INFO",
        }
        with server_log.open("w") as err:
            server = subprocess.Popen(
                [str(PRAVAH), "serve", "--port", str(port)],
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, server, server_log)
            resp = httpx.post(
                f"{url}/jobs",
                json={"source": str(data), "task": "csv-header"},
                timeout=10,
                headers=AUTH,
            )
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["id"]
            engine_during: list[dict[Any, float]] = []
            cp_during: list[dict[Any, float]] = []
            deadline = time.monotonic() + 120
            while True:
                engine_during.append(
                    _samples(parse_openmetrics(httpx.get(f"http://{metrics_addr}/metrics").text))
                )
                cp_during.append(_samples(parse_prometheus(httpx.get(f"{url}/metrics").text)))
                job = httpx.get(f"{url}/jobs/{job_id}", timeout=10, headers=AUTH).json()
                if job["status"] in {"completed", "failed", "cancelled"}:
                    break
                assert time.monotonic() < deadline, f"job not finished in time: {job}"
                time.sleep(0.05)
            engine_metrics = _samples(
                parse_openmetrics(httpx.get(f"http://{metrics_addr}/metrics").text)
            )
            cp_metrics = _samples(parse_prometheus(httpx.get(f"{url}/metrics").text))
        finally:
            _stop(server, signal.SIGINT)
            _stop(engine, signal.SIGTERM)
            assert engine.stdout is not None
            engine.stdout.close()

        def complete(spans: list[ReceivedSpan]) -> bool:
            services = {s.service for s in spans}
            names = {s.name for s in spans}
            return {"pravah-control-plane", "pravah-engine"} <= services and {
                "job.run",
                "process.batch",
                f"{RPC_SERVICE}/Process",
            } <= names

        spans = receiver.wait_for(complete, timeout=15)
    yield Observed(
        job=job,
        spans=spans,
        engine_metrics=engine_metrics,
        cp_metrics=cp_metrics,
        engine_metrics_during=engine_during,
        cp_metrics_during=cp_during,
        engine_log=engine_log.read_text().splitlines(),
        server_log=server_log.read_text().splitlines(),
    )


# -------------------------------------------------------------------- traces


def _one(spans: list[ReceivedSpan], **where: Any) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    out = []
    while span.parent_span_id in by_id:
        out.append(span.parent_span_id)
        span = by_id[span.parent_span_id]
    return out


def test_one_job_is_one_trace_from_post_to_engine_batches(observed: Observed) -> None:
    job_id = observed.job["id"]
    assert observed.job["status"] == "completed", observed.job
    spans = observed.spans
    post = _one(spans, name="POST /jobs")
    assert post.service == "pravah-control-plane"
    assert post.kind == SPAN_KIND_SERVER
    assert post.attributes["http.request.method"] == "POST"
    assert post.attributes["http.route"] == "/jobs"
    assert post.attributes["http.response.status_code"] == 202
    trace = [s for s in spans if s.trace_id == post.trace_id]
    # Every span that names the job belongs to the POST's trace.
    for s in spans:
        if s.attributes.get("pravah.job_id") == job_id:
            assert s.trace_id == post.trace_id, s
    run = _one(trace, name="job.run")
    by_id = {s.span_id: s for s in trace}
    # The worker continues the request's trace: POST /jobs is an ancestor.
    assert post.span_id in _ancestors(run, by_id)
    assert run.attributes["pravah.job_id"] == job_id
    assert run.attributes["pravah.task"] == "csv-header"
    assert run.attributes["pravah.files_done"] == observed.job["progress"]["files_done"]
    files_total = observed.job["progress"]["files_total"]
    chunks = -(-files_total // CHUNK_FILES)
    for method, calls in (("List", 1), ("Process", chunks)):
        # One List per job; one Process call per chunk (chunks are checkpoints
        # and are spread over engines, pravah.engine_pool).
        clients = [
            s
            for s in trace
            if s.name == f"{RPC_SERVICE}/{method}" and s.service == "pravah-control-plane"
        ]
        servers = [
            s for s in trace if s.name == f"{RPC_SERVICE}/{method}" and s.service == "pravah-engine"
        ]
        assert len(clients) == len(servers) == calls, (method, clients, servers)
        client_ids = {c.span_id for c in clients}
        for client in clients:
            assert client.kind == SPAN_KIND_CLIENT
            assert client.parent_span_id == run.span_id
        for server in servers:
            assert server.kind == SPAN_KIND_SERVER
            # The process boundary: the engine's server span is a client span's child.
            assert server.parent_span_id in client_ids
            assert server.attributes["rpc.system"] == "grpc"
            assert server.attributes["rpc.service"] == RPC_SERVICE
            assert server.attributes["rpc.method"] == method
            assert server.attributes["pravah.job_id"] == job_id
    processes = [
        s for s in trace if s.name == f"{RPC_SERVICE}/Process" and s.service == "pravah-engine"
    ]
    assert all(p.attributes["pravah.task"] == "csv-header" for p in processes)
    files_done = observed.job["progress"]["files_done"]
    assert sum(p.attributes["pravah.files"] for p in processes) == files_done
    items = [s for s in trace if s.name == "process.item"]
    batches = [s for s in trace if s.name == "process.batch"]
    assert len(items) == chunks >= 3
    assert {i.parent_span_id for i in items} == {p.span_id for p in processes}
    assert all(by_id[b.parent_span_id].name == "process.item" for b in batches)
    assert sum(b.attributes["pravah.files"] for b in batches) == files_total
    assert (
        sum(b.attributes["pravah.files_failed"] for b in batches)
        == (observed.job["progress"]["files_failed"])
    )
    walk = _one(trace, name="list.walk")
    assert by_id[walk.parent_span_id].name == f"{RPC_SERVICE}/List"
    assert walk.attributes["pravah.files"] == files_total
    # No span per file: spans grow with chunks and batches, not files.
    assert len(trace) < 40


# ------------------------------------------------------------------- metrics


def test_engine_metrics_match_the_jobs_counts(observed: Observed) -> None:
    progress = observed.job["progress"]
    m = observed.engine_metrics
    task = {"task": "csv-header"}
    assert _value(m, "pravah_engine_files_processed_total", **task) == progress["files_done"]
    assert _value(m, "pravah_engine_files_failed_total", **task) == progress["files_failed"]
    assert _value(m, "pravah_engine_processed_bytes_total", **task) == progress["bytes_done"]
    assert _value(m, "pravah_engine_failed_bytes_total", **task) == progress["bytes_failed"]
    assert _value(m, "pravah_engine_walk_files_total") == progress["files_total"]
    assert _value(m, "pravah_engine_batches_in_flight") == 0
    chunks = -(-progress["files_total"] // CHUNK_FILES)  # one Process call per chunk
    assert _value(m, "pravah_engine_process_duration_seconds_count", **task) == chunks
    assert _value(m, "pravah_engine_batch_duration_seconds_count", **task) >= 3
    assert _value(m, "pravah_engine_grpc_requests_total", method="Process", code="Ok") == chunks
    assert _value(m, "pravah_engine_walk_files_per_second") > 0
    # Scraped during the job too: counters only grow.
    during = [
        _value(s, "pravah_engine_files_processed_total", **task)
        for s in observed.engine_metrics_during
    ]
    assert during == sorted(during)
    assert all(v <= progress["files_done"] for v in during)


def test_control_plane_metrics_count_the_job(observed: Observed) -> None:
    m = observed.cp_metrics
    task = {"task": "csv-header"}
    assert _value(m, "pravah_jobs_created_total", **task) == 1
    assert _value(m, "pravah_jobs_completed_total", **task) == 1
    assert _value(m, "pravah_jobs_failed_total", **task) == 0
    assert _value(m, "pravah_jobs_queued") == 0
    assert _value(m, "pravah_jobs_running") == 0
    done = {"task": "csv-header", "status": "completed"}
    assert _value(m, "pravah_job_duration_seconds_count", **done) == 1
    assert _value(m, "pravah_job_queue_seconds_count", **task) == 1
    chunks = -(-observed.job["progress"]["files_total"] // CHUNK_FILES)
    assert _value(m, "pravah_engine_calls_total", method="Process", result="ok") == chunks
    assert _value(m, "pravah_engine_calls_total", method="List", result="ok") == 1
    assert (
        _value(
            m,
            "pravah_http_request_duration_seconds_count",
            method="POST",
            route="/jobs",
            status="202",
        )
        == 1
    )
    # Job reads are labelled by the route template, never by the raw path.
    routes = {dict(labels).get("route") for (_, labels) in m}
    assert "/jobs/{job_id}" in routes
    assert not any(r and observed.job["id"] in r for r in routes)
    # During the run the job was counted as running (or already done).
    running = [_value(s, "pravah_jobs_running") for s in observed.cp_metrics_during]
    assert set(running) <= {0.0, 1.0}


# ---------------------------------------------------------------------- logs


def _parse_lines(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {line!r}")
    return parsed


def test_every_log_line_is_json_and_job_lines_carry_job_and_trace_ids(
    observed: Observed,
) -> None:
    job_id = observed.job["id"]
    post = _one(observed.spans, name="POST /jobs")
    for name, lines in (("engine", observed.engine_log), ("serve", observed.server_log)):
        records = _parse_lines(lines)
        assert records, f"{name} wrote no log lines"
        for r in records:
            assert {"timestamp", "level"} <= r.keys(), r
            assert "message" in r or "event" in r, r
        # A line that mentions the job (its id, or its workspace) is tagged.
        about_job = [r for r in records if job_id in json.dumps(r)]
        assert about_job, f"{name} logged nothing about the job"
        for r in about_job:
            assert r.get("job_id") == job_id, (name, r)
            assert r.get("trace_id") == post.trace_id, (name, r)
    serve_events = {r.get("event") for r in _parse_lines(observed.server_log)}
    assert {"listing done", "job finished"} <= serve_events
    engine_messages = {r.get("message") for r in _parse_lines(observed.engine_log)}
    assert {"list", "process"} <= engine_messages


def test_engine_logs_are_human_readable_on_a_terminal(engine_bin: Path) -> None:
    import pty

    primary, secondary = pty.openpty()
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [str(engine_bin), "--listen", "127.0.0.1:0"],
        env={**env, "LOG_LEVEL": "info"},
        stdout=subprocess.PIPE,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(secondary)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on ")
        out = b""
        deadline = time.monotonic() + 10
        while b"engine serving" not in out and time.monotonic() < deadline:
            out += os.read(primary, 4096)
    finally:
        _stop(proc, signal.SIGTERM)
        os.close(primary)
        if proc.stdout is not None:
            proc.stdout.close()
    line = next(x for x in out.decode().splitlines() if "engine serving" in x)
    assert not line.lstrip().startswith("{"), line
    assert "INFO" in line


# ------------------------------------------------------------------ dashboard


def test_grafana_dashboard_charts_only_metrics_both_processes_export(
    observed: Observed,
) -> None:
    import re

    from cli_harness import REPO

    dashboard = json.loads((REPO / "deploy" / "grafana" / "pravah-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bpravah_[a-z_]+", e)}
    exported = {name for (name, _) in observed.engine_metrics} | {
        name for (name, _) in observed.cp_metrics
    }
    missing = sorted(used - exported)
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"
    assert any(m.startswith("pravah_engine_") for m in used)
    assert any(m.startswith("pravah_jobs_") for m in used)
