"""The web dashboard: static pages served by the control plane itself.

Why no build step: the pages are hand-written ES modules, CSS and inline SVG
charts kept as package data under `pravah/static/`, so `pip install` is the
whole build, `pravah serve` serves them from the same origin as the API, and
nothing loads from the network at run time. Routing is by URL fragment
(`/ui/#/jobs/<id>`), so the server needs one HTML page and a static folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(str(files("pravah") / "static"))


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at /ui/ (and redirect / there)."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    @app.get("/ui/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
