"""The FastAPI application and its lifespan.

Why the lifespan does so much: one `pravah serve` must be a complete service.
On start it migrates the DB, starts a local engine when PRAVAH_ENGINE_URLS is
empty, fetches the engine capabilities (the source of truth for tasks and
options), and runs the worker in the background unless PRAVAH_RUN_WORKER is
false (API-only instances in a scaled deployment). On stop it stops the
worker gracefully, then the engine, then closes the DB.

Observability: traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set
(pravah.telemetry), every request gets a server span and a latency sample by
route template, and `GET /metrics` serves Prometheus metrics.

Errors: the service layer raises PravahError subclasses; they become HTTP
codes here and nowhere else. Every error body is `{"detail": "<sentence>"}`.

Security: every route declares the role it needs through its dependency
alias (`pravah.api.deps`); JSON bodies are capped at PRAVAH_MAX_BODY_BYTES
(uploads have their own limit); 401 answers carry `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pravah import __version__, telemetry
from pravah.api.limits import BodySizeLimitMiddleware
from pravah.api.routes import config, dashboard, health, jobs, keys, schedules, uploads
from pravah.api.routes import metrics as metrics_routes
from pravah.api.state import AppState
from pravah.db import Database, migrate
from pravah.engine_launcher import LocalEngine
from pravah.errors import (
    AuthenticationError,
    ConflictError,
    EngineBinaryNotFoundError,
    EngineUnavailableError,
    GoneError,
    InvalidRequestError,
    JobCancelledError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PravahError,
)
from pravah.log import get_logger
from pravah.settings import Settings, get_settings
from pravah.web import mount_dashboard
from pravah.worker import Worker

log = get_logger(__name__)

_STATUS: list[tuple[type[PravahError], int]] = [
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (InvalidRequestError, 422),
    (ConflictError, 409),
    (GoneError, 410),
    (PayloadTooLargeError, 413),
    (JobCancelledError, 409),
    (EngineUnavailableError, 503),
    (EngineBinaryNotFoundError, 503),
]


def http_status(exc: PravahError) -> int:
    """The HTTP status for a service error (500 for unexpected kinds)."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _describe_validation(errors: list[Any]) -> str:
    parts: list[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        kind = err.get("type", "")
        msg = str(err.get("msg", "invalid"))
        if kind == "json_invalid":
            ctx = err.get("ctx") or {}
            reason = ctx.get("error", msg)
            return f"request body is not valid JSON: {reason}"
        msg = msg.removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        elif kind == "missing":
            msg = "field required"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


# The one error body of this API (see the handlers below); FastAPI would
# otherwise document 422s with its own `HTTPValidationError` shape.
_ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in one sentence."},
        "field": {"type": "string", "description": "The request field at fault, if known."},
        "errors": {
            "type": "array",
            "items": {"type": "object"},
            "description": "Schema validation errors: loc, msg, type.",
        },
    },
    "required": ["detail"],
}


def _describe_errors(app: FastAPI) -> None:
    """Replace FastAPI's validation-error schema with the API's real error body."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            if "HTTPValidationError" in components:
                components["HTTPValidationError"] = _ERROR_SCHEMA
                components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application; its lifespan runs migrations, engine and worker."""
    settings = settings or get_settings()
    telemetry.configure_tracing()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await migrate(settings)
            db = Database(settings)
            stack.push_async_callback(db.dispose)
            urls = list(settings.engine_urls)
            if not urls:
                urls = [await stack.enter_async_context(LocalEngine.from_settings(settings))]
            state = AppState(settings=settings, db=db, engine_urls=urls)
            stack.push_async_callback(state.close)
            try:
                await state.get_capabilities()
            except PravahError as exc:
                log.warning("engine capabilities unavailable at start", error=str(exc))
            app.state.pravah = state
            if settings.run_worker:
                stop = asyncio.Event()
                worker = Worker(settings, urls, db=db)
                state.worker = worker
                task = asyncio.create_task(worker.run(stop), name="pravah-worker")

                async def stop_worker() -> None:
                    stop.set()
                    await task

                stack.push_async_callback(stop_worker)
            log.info("api ready", engines=urls, worker=settings.run_worker)
            yield

    app = FastAPI(
        title="Pravah",
        version=__version__,
        description="File and data processing jobs over Rust engines.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(config.router)
    app.include_router(dashboard.router)
    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(uploads.router)
    app.include_router(keys.router)
    mount_dashboard(app)
    app.include_router(metrics_routes.router)
    _describe_errors(app)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=("/uploads",)
    )
    app.add_middleware(telemetry.HttpObservabilityMiddleware, router=app.router)

    @app.exception_handler(PravahError)
    async def pravah_error(_: Request, exc: PravahError) -> JSONResponse:
        content: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, InvalidRequestError) and exc.field:
            content["field"] = exc.field  # lets a form show the message by its field
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse(status_code=http_status(exc), content=content, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        detail = _describe_validation(errors)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in errors)
        if whole_body and kind not in ("application/json", ""):
            # curl -d sends form encoding: FastAPI then reads no JSON at all.
            detail = (
                f"the body must be JSON sent with 'Content-Type: application/json' "
                f"(this request said {kind!r})"
            )
        return JSONResponse(
            status_code=422,
            content={
                "detail": detail,
                "errors": [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                    for e in errors
                ],
            },
        )

    return app
