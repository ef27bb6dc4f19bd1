"""GET /config: tasks, their option and result schemas, and limits.

The engine declares tasks once (GetCapabilities); this only re-serves them,
with the control plane's own limits beside the engine's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pravah import __version__
from pravah.api.deps import CapabilitiesDep, SettingsDep, ViewerDep

router = APIRouter(tags=["config"])


@router.get("/config")
async def get_config(
    _caller: ViewerDep, capabilities: CapabilitiesDep, settings: SettingsDep
) -> dict[str, Any]:
    """What the service can do."""
    body = capabilities.to_dict()
    body["control_plane_version"] = __version__
    body["limits"].update(
        {
            "results_default_limit": settings.results_default_limit,
            "results_max_limit": settings.results_max_limit,
            "jobs_default_limit": settings.jobs_default_limit,
            "jobs_max_limit": settings.jobs_max_limit,
            "worker_concurrency": settings.worker_concurrency,
        }
    )
    return body
