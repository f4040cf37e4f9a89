"""The process-wide objects a running Apiary shares: settings, database, counters, HTTP client.

Built once by `create_app` (or by a CLI command) and closed on shutdown; request handlers
reach it through the `RuntimeDep` dependency, never through module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from apiary.auth.oidc import OIDCVerifier
from apiary.config import Settings
from apiary.db import create_engine, create_session_factory
from apiary.kv import CounterStore, create_counter_store


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    counters: CounterStore
    http: httpx.AsyncClient
    oidc: OIDCVerifier | None = field(default=None)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.sqlalchemy_url)
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        return cls(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            counters=create_counter_store(settings.redis_url),
            http=http,
            oidc=OIDCVerifier(settings.oidc, http) if settings.oidc else None,
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.counters.close()
        await self.engine.dispose()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
