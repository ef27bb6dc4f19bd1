"""OpenTelemetry traces of the control plane, and trace context across processes.

Why here: one job is one trace that crosses three hops - the `POST /jobs`
request, the worker that picks the job up later (maybe in another process),
and the engine. This module owns each hand-over:

- `configure_tracing()` installs an SDK tracer provider exporting over
  OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
  set; otherwise nothing is installed and every span is a free no-op. The
  standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, default
  `pravah-control-plane`; `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_BSP_*`).
- `current_trace_context()` captures the W3C context of the request that
  creates a job; it is stored on the job row (`trace_context`), and
  `job_span()` starts the worker's span with it as parent - so the worker's
  work is a child of `POST /jobs`, not a new trace.
- `client_call()` opens the CLIENT span of one engine RPC and returns the
  gRPC metadata carrying its `traceparent`; the engine makes its server span
  a child of it.
- `HttpObservabilityMiddleware` names every HTTP request's SERVER span by
  its route template (`POST /jobs`) and records the latency histogram (pure
  ASGI, so streaming responses such as SSE pass through untouched). FastAPI
  (0.16x) opens the SERVER span itself once a tracer provider is installed,
  with the semantic-convention attributes and per-dependency child spans, but
  names it by the method alone; the middleware renames it. On a FastAPI
  without native telemetry the middleware opens the span itself.

Span and attribute names follow the OpenTelemetry semantic conventions
(`http.request.method`, `http.route`, `rpc.system`, ...) plus `pravah.*`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from pravah import metrics

if TYPE_CHECKING:  # Starlette loads with the API only, not for `pravah run`
    from starlette.routing import Router
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_SERVICE_NAME = "pravah-control-plane"
RPC_SERVICE = "pravah.engine.v1.EngineService"
_TRACER_NAME = "pravah"

_lock = threading.Lock()
_provider: Any = None


def otlp_configured() -> bool:
    """True when the standard variables ask for OTLP trace export."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(
        os.environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(service_name: str | None = None) -> bool:
    """Install the OTLP exporting tracer provider once; return True when exporting."""
    global _provider
    with _lock:
        if _provider is not None:
            return True
        if not otlp_configured():
            return False
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from pravah import __version__

        name = (
            os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name or DEFAULT_SERVICE_NAME
        )
        resource = Resource.create({SERVICE_NAME: name, SERVICE_VERSION: __version__})
        provider = TracerProvider(resource=resource)
        # The exporter reads OTEL_EXPORTER_OTLP_{TRACES_,}ENDPOINT, _HEADERS,
        # _TIMEOUT and _INSECURE itself; an http:// endpoint means plaintext.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider = provider
        return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at process exit)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def engine_child_env() -> dict[str, str] | None:
    """The environment of a local engine child: ours, minus OTEL_SERVICE_NAME.

    The child inherits the OTLP endpoint and the other OTEL_* settings, but a
    service name meant for the control plane would mislabel the engine's
    spans; without it the engine reports as `pravah-engine`. None (inherit
    as is) when there is nothing to remove.
    """
    if "OTEL_SERVICE_NAME" not in os.environ:
        return None
    env = dict(os.environ)
    env.pop("OTEL_SERVICE_NAME")
    return env


def tracer() -> trace.Tracer:
    """The control plane's tracer (a no-op one when tracing is off)."""
    return trace.get_tracer(_TRACER_NAME)


def current_trace_context() -> dict[str, str] | None:
    """The current W3C trace context as a carrier dict, or None outside a span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from(carrier: Mapping[str, str] | None) -> Context | None:
    """A parent context from a stored carrier (None when there is none)."""
    if not carrier:
        return None
    return propagate.extract(dict(carrier))


def trace_id_hex(span: Span | None = None) -> str | None:
    """The 32-hex-digit trace id of `span` (default: the current span), if valid."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextlib.contextmanager
def job_span(
    job_id: str, task: str, carrier: Mapping[str, str] | None, **attributes: Any
) -> Iterator[Span]:
    """The worker's span for one run of a job, a child of the request that created it.

    The job id also goes into W3C baggage (`pravah.job_id`), so the engine
    can tag calls whose messages do not name the job (List).
    """
    attrs = {"pravah.job_id": job_id, "pravah.task": task, **attributes}
    token = otel_context.attach(baggage.set_baggage("pravah.job_id", job_id))
    try:
        with tracer().start_as_current_span(
            "job.run",
            context=context_from(carrier),
            kind=SpanKind.CONSUMER,
            attributes=attrs,
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


class ClientCall:
    """The CLIENT span of one engine RPC; `metadata` carries its traceparent."""

    def __init__(self, method: str, target: str) -> None:
        self.method = method
        host, _, port = target.rpartition(":")
        attrs: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": RPC_SERVICE,
            "rpc.method": method,
            "server.address": host or target,
        }
        if port.isdigit():
            attrs["server.port"] = int(port)
        self.span = tracer().start_span(
            f"{RPC_SERVICE}/{method}", kind=SpanKind.CLIENT, attributes=attrs
        )
        carrier: dict[str, str] = {}
        # Not made current: streaming calls live in async generators, which may
        # be closed from another context; an explicit context is always safe.
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        self.metadata: tuple[tuple[str, str], ...] = tuple(carrier.items())
        self._done = False

    def end(self, code: str = "OK", error: str | None = None) -> None:
        """End the span and count the call by result (`OK` or the gRPC code name)."""
        if self._done:
            return
        self._done = True
        self.span.set_attribute("rpc.grpc.status_code_name", code)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        metrics.engine_call(self.method, code.lower())


def client_call(method: str, target: str) -> ClientCall:
    """Start the CLIENT span of one engine RPC."""
    return ClientCall(method, target)


# --------------------------------------------------------------------- HTTP


_UNTRACED_PATHS = frozenset({"/metrics"})


class HttpObservabilityMiddleware:
    """SERVER span name and latency histogram per HTTP request, by route template."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    def _route(self, scope: Scope) -> str:
        """The matched route's template: Starlette records it in scope["route"]."""
        from starlette.routing import Match

        route = scope.get("route")
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if path:
            return str(path)
        for candidate in self.router.routes:
            match, _ = candidate.matches(scope)
            template = getattr(candidate, "path", None)
            if match == Match.FULL and template:
                return str(template)
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        native = trace.get_current_span()
        if native.is_recording() or str(scope.get("path", "")) in _UNTRACED_PATHS:
            # FastAPI's own server span (or no span wanted): name it, time it.
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = self._observe(scope, method, status["code"], started)
                if native.is_recording():
                    native.update_name(_span_name(method, route))
                    native.set_attribute("http.route", route)
            return
        with tracer().start_as_current_span(
            method,
            context=propagate.extract(
                {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
            ),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": str(scope.get("path", "")),
                "url.scheme": str(scope.get("scheme", "http")),
            },
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = self._observe(scope, method, status["code"], started)
                span.update_name(_span_name(method, route))
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status["code"])
                if status["code"] >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    def _observe(self, scope: Scope, method: str, code: int, started: float) -> str:
        route = self._route(scope)
        metrics.http_request(method, route, str(code), time.perf_counter() - started)
        return route


def _span_name(method: str, route: str) -> str:
    return f"{method} {route}" if route != "unmatched" else method
