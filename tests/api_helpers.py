"""The service in-process, for tests that talk to its REST API.

Why one helper: the app must run with its lifespan (migrations, a local
engine or the configured ones, the worker), and the client must reach it
over ASGI with the test admin key; every API test module needs exactly that.
A module of its own, not a conftest, so any test folder can import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from auth_helpers import AUTH
from pravah.api.app import create_app
from pravah.settings import Settings


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of a running app built from `settings`, signed in as admin."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://pravah", headers=AUTH
        ) as client:
            yield client
