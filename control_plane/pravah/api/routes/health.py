"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pravah.api.deps import StateDep
from pravah.errors import PravahError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(state: StateDep) -> dict[str, Any] | JSONResponse:
    """The database is reachable and an engine answers; 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        await state.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {exc}"
    try:
        await state.get_capabilities(refresh=True)
        checks["engine"] = "ok"
    except PravahError as exc:
        checks["engine"] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if not ready:
        failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
        return JSONResponse(status_code=503, content={**body, "detail": f"not ready: {failing}"})
    return body
