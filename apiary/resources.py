"""Process resources: what every part of a running Apiary shares and no domain owns.

The database (engine, session factories, the group commit), the one Redis client, the
notifier and the shared outbound HTTP client. Opened first by the composition root
(`apiary.runtime`), which builds the domains' objects on top of them, and closed last,
after everything that uses them has stopped. This module imports no domain
(tests/test_import_layers.py holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from apiary.config import Settings
from apiary.db import GroupCommit, create_engine, create_lookup_factory, create_session_factory
from apiary.kit import redis as shared_redis
from apiary.kit.notify import LocalNotifier, Notifier, RedisNotifier

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    lookups: async_sessionmaker[AsyncSession]  # a lone read outside a transaction (auth)
    writes: GroupCommit  # small concurrent writes (swarm events, subtasks, checkpoints)
    redis: Redis | None  # one pool, one timeout policy (kit/redis.py), when configured
    notifier: Notifier  # Redis pub/sub across processes, or in-process
    http: httpx.AsyncClient  # outbound calls that are not model calls (OIDC discovery, ...)

    @classmethod
    def open(cls, settings: Settings) -> Resources:
        """Nothing here connects yet: pools connect on first use, so a database or Redis
        that is down at start-up fails requests (and /readyz), not the process."""
        if settings.is_sqlite:
            settings.prepare_data_dir()
        engine = create_engine(settings.sqlalchemy_url)
        session_factory = create_session_factory(engine)
        redis = shared_redis.connect(settings.redis_url) if settings.redis_url else None
        return cls(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            lookups=create_lookup_factory(engine),
            writes=GroupCommit(session_factory),
            redis=redis,
            notifier=RedisNotifier(redis) if redis else LocalNotifier(),
            http=httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)),
        )

    async def close(self) -> None:
        """After the parts that use them: the runtime drains the group commit first."""
        await self.http.aclose()
        await self.notifier.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
