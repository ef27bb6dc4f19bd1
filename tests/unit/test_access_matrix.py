"""Every route of the API declares the role it needs, or is deliberately public.

The matrix below is the reviewed list. A new route fails this test until it
takes a role alias from `pravah.api.deps` (ViewerDep, OperatorDep,
AdminDep, or a router-level `Depends(require(...))`) and is added here, or is
added to PUBLIC with a reason. The behaviour behind each entry (401 without a
key, 403 below the role) is checked over HTTP in
tests/integration/test_security_api.py, from the same matrix.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import iter_route_contexts
from pravah.api.app import create_app
from pravah.api.deps import route_guards
from pravah.auth import Role
from pravah.settings import Settings

# (method, path) -> role needed. Admin-only management, operator changes,
# viewer reads; ownership is checked by the routes themselves.
MATRIX: dict[tuple[str, str], Role] = {
    ("GET", "/config"): Role.viewer,
    ("POST", "/jobs"): Role.operator,
    ("GET", "/jobs"): Role.viewer,
    ("GET", "/jobs/{job_id}"): Role.viewer,
    ("POST", "/jobs/{job_id}/cancel"): Role.operator,
    ("POST", "/jobs/{job_id}/retry-failed"): Role.operator,
    ("POST", "/schedules"): Role.operator,
    ("GET", "/schedules"): Role.viewer,
    ("GET", "/schedules/{schedule_id}"): Role.viewer,
    ("DELETE", "/schedules/{schedule_id}"): Role.operator,
    ("POST", "/schedules/{schedule_id}/pause"): Role.operator,
    ("POST", "/schedules/{schedule_id}/resume"): Role.operator,
    ("GET", "/jobs/{job_id}/events"): Role.viewer,
    ("GET", "/jobs/{job_id}/results"): Role.viewer,
    ("POST", "/jobs/dry-run"): Role.operator,
    ("GET", "/jobs/{job_id}/errors"): Role.viewer,
    ("GET", "/jobs/{job_id}/output"): Role.viewer,
    ("GET", "/events/jobs"): Role.viewer,
    ("POST", "/uploads"): Role.operator,
    ("GET", "/uploads"): Role.operator,
    ("GET", "/uploads/{upload_id}"): Role.operator,
    ("DELETE", "/uploads/{upload_id}"): Role.operator,
    ("GET", "/keys/me"): Role.viewer,
    ("GET", "/keys"): Role.admin,
    ("POST", "/keys"): Role.admin,
    ("DELETE", "/keys/{key_id}"): Role.admin,
    # Public unless PRAVAH_METRICS_PUBLIC=false, then a viewer key.
    ("GET", "/metrics"): Role.viewer,
}

# Deliberately without a key: probes, the static dashboard shell (it holds no
# data; every call it makes carries the key) and the API description.
PUBLIC: set[tuple[str, str]] = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
}
# FastAPI's own pages and the dashboard's static files (no dependant at all).
PUBLIC_PLAIN = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/ui/static"}


def _app_routes() -> list[Any]:
    """Every route of the app, routers flattened (FastAPI includes them lazily)."""
    app = create_app(Settings(admin_key=None))
    routes = []
    for context in iter_route_contexts(app.routes):
        if getattr(context, "dependant", None) is None:
            assert context.path in PUBLIC_PLAIN, f"{context.path}: a route FastAPI cannot guard"
            continue
        routes.append(context)
    return routes


def _needed(route: Any) -> Role | None:
    guards = route_guards(route.dependant)
    return max((g.role for g in guards), key=lambda r: r.rank) if guards else None


def test_every_route_is_in_the_matrix_or_public() -> None:
    unlisted = []
    for route in _app_routes():
        for method in sorted(route.methods or ()):
            key = (method, route.path)
            if key in PUBLIC:
                assert _needed(route) is None, f"{key} is listed public but has a guard"
            elif key not in MATRIX:
                unlisted.append(key)
            else:
                assert _needed(route) == MATRIX[key], (
                    f"{key} needs {_needed(route)}, the matrix says {MATRIX[key]}"
                )
    assert unlisted == [], (
        f"routes without an entry in the access matrix: {unlisted}; give each a role "
        "alias from pravah.api.deps and list it in MATRIX (or PUBLIC, with a reason)"
    )


def test_every_openapi_operation_is_covered() -> None:
    # The same check from the published document: what clients see.
    schema: dict[str, Any] = create_app(Settings(admin_key=None)).openapi()
    for path, item in schema["paths"].items():
        for method in item:
            key = (method.upper(), path)
            assert key in MATRIX or key in PUBLIC, f"{key} is in OpenAPI but not in the matrix"
            if key in MATRIX:
                assert item[method].get("security"), f"{key} does not declare bearer security"


def test_matrix_has_no_stale_entries() -> None:
    present = {(m, r.path) for r in _app_routes() for m in (r.methods or ())}
    assert set(MATRIX) - present == set()


def test_roles_are_ordered() -> None:
    assert Role.admin.allows(Role.operator) and Role.operator.allows(Role.viewer)
    assert not Role.viewer.allows(Role.operator) and not Role.operator.allows(Role.admin)
