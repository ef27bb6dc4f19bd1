"""What the API process holds for its lifetime (set up by the lifespan).

Why a typed object instead of loose `app.state` attributes: dependencies and
routes read it with types, and tests can build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pravah.auth import KeyVerifier
from pravah.db import Database
from pravah.engine_client import Capabilities, EngineClient
from pravah.errors import EngineUnavailableError, PravahError
from pravah.settings import Settings
from pravah.worker import Worker


@dataclass
class AppState:
    """Settings, DB, engine URLs, cached capabilities and the in-process worker."""

    settings: Settings
    db: Database
    engine_urls: list[str]
    capabilities: Capabilities | None = None
    worker: Worker | None = None
    _clients: dict[str, EngineClient] = field(default_factory=dict)
    verifier: KeyVerifier = field(init=False)

    def __post_init__(self) -> None:
        admin = self.settings.admin_key
        self.verifier = KeyVerifier(admin.get_secret_value() if admin else None)

    def client(self, url: str | None = None) -> EngineClient:
        """A shared client of `url` (default: the first engine)."""
        if not self.engine_urls and url is None:
            raise EngineUnavailableError("no engine is configured (PRAVAH_ENGINE_URLS is empty)")
        key = url or self.engine_urls[0]
        if key not in self._clients:
            self._clients[key] = EngineClient.from_settings(key, self.settings)
        return self._clients[key]

    async def get_capabilities(self, refresh: bool = False) -> Capabilities:
        """The engines' capabilities, fetched once and cached."""
        if self.capabilities is None or refresh:
            errors: list[str] = []
            for url in self.engine_urls:
                try:
                    self.capabilities = await self.client(url).capabilities(deadline=5.0)
                    break
                except PravahError as exc:
                    errors.append(str(exc))
            else:
                raise EngineUnavailableError(
                    "no engine answered: " + ("; ".join(errors) or "no engine configured")
                )
        return self.capabilities

    async def close(self) -> None:
        """Close the engine clients."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
