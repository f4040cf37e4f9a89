"""The PostgreSQL pool after its server has dropped connections (a restart, a failover, a
proxy's idle timeout): a connection that sat idle is pinged and replaced before use, so
the next request succeeds; one used moments ago fails once as an outage (503, not 500)
and takes the stale pool with it, so the request after it succeeds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from apiary import db
from tests.conftest import TEST_DATABASE

pytestmark = pytest.mark.skipif(
    TEST_DATABASE == "sqlite", reason="a server that drops connections: PostgreSQL only"
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


async def _backend(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _drop_backends(database_url: str, pids: set[int]) -> None:
    """Terminate `pids` from a connection of another engine, as a restart would."""
    killer = db.create_engine(database_url)
    try:
        async with killer.connect() as connection:
            for pid in pids:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _backend(engine)
    await _drop_backends(database_url, {first})
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # the connection counts as idle

    # No error reaches the caller: the ping found the connection dead and the pool
    # connected again.
    assert await _backend(engine) != first


async def test_a_connection_dropped_while_busy_fails_once_as_an_outage_then_recovers(
    engine: AsyncEngine, database_url: str
) -> None:
    # Two connections in the pool, both used a moment ago (no ping before their next use).
    async with engine.connect() as one, engine.connect() as two:
        pids = {
            int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()) for c in (one, two)
        }
    await _drop_backends(database_url, pids)

    with pytest.raises(DBAPIError) as failed:
        await _backend(engine)
    assert db.database_unreachable(failed.value)  # a 503 with Retry-After to the client

    # The disconnect invalidated the whole pool: the other dead connection is not handed
    # out again.
    assert await _backend(engine) not in pids
    assert await _backend(engine) not in pids
