"""When each API key was last used, written in batches off the request path
(apiary/api_keys/last_used.py): a flush under way is waited for, and a write stopped
part-way (the server shutting down) keeps what it had taken for the last flush."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from apiary.api_keys.last_used import LastUsedRecorder
from apiary.api_keys.models import ApiKey
from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant

pytestmark = pytest.mark.services  # the write is held up by a PostgreSQL row lock


async def test_a_flush_waits_for_the_write_under_way_and_a_stopped_write_is_not_lost(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime, client, "last-used")
    key_id = uuid.UUID((await make_api_key(runtime, tenant, Role.DEVELOPER)).extra["key_id"])
    recorder = LastUsedRecorder(runtime.session_factory)
    used_at = datetime(2026, 12, 6, 1, 30, tzinfo=UTC)
    recorder.note(key_id, used_at)

    async with runtime.session_factory() as holder:
        # Another transaction holds the key's row: the recorder's write waits for it.
        await holder.execute(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
        timer_write = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.3)
        assert not timer_write.done()
        flush = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.3)
        assert not flush.done(), "a flush returned while a write was still under way"
        timer_write.cancel()  # as `close` stops the timer's task
        with contextlib.suppress(asyncio.CancelledError):
            await timer_write
        await holder.rollback()
    await asyncio.wait_for(flush, 10)

    async with runtime.session_factory() as session:
        stored = await session.get(ApiKey, key_id)
    assert stored is not None
    assert stored.last_used_at is not None
    assert stored.last_used_at.replace(tzinfo=UTC) == used_at
