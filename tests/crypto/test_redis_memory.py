"""Conversation memory kept in Redis is ciphertext there too, and another process with the
same keys reads it. Not both_databases: the embedded pass has no Redis."""

from __future__ import annotations

import uuid

import httpx
import pytest
from redis.asyncio import Redis

from apiary.crypto.keyring import Keyring
from apiary.memory.service import memory_service
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.crypto.test_encryption_at_rest import _agent
from tests.factories import make_tenant

pytestmark = pytest.mark.skipif(not TEST_REDIS, reason="needs the test Redis")


async def test_redis_memory_written_by_one_keyring_reads_in_another_process(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring
) -> None:
    assert TEST_REDIS is not None
    assert runtime.redis is not None  # the PostgreSQL + Redis pass: memory lives in Redis
    tenant = await make_tenant(runtime, client)
    tenant_id, agent_id = uuid.UUID(tenant.id), await _agent(runtime, tenant)
    # The app's own store (Redis here) through the app's own memory: what executions use.
    await memory_service.record_turn(
        runtime,
        tenant_id=tenant_id,
        agent_id=agent_id,
        thread_id="t-1",
        execution_id=uuid.uuid4(),
        task="The vault opens with PLUM-7731.",
        answer="Understood.",
    )
    redis = Redis.from_url(TEST_REDIS)
    try:
        keys = [key async for key in redis.scan_iter("apiary:memory:*:turns")]
        values = [await redis.lrange(key, 0, -1) for key in keys]
    finally:
        await redis.aclose()
    assert values
    assert all(b"PLUM-7731" not in item for items in values for item in items)
    context = await memory_service.context_text(
        runtime, tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
    )
    assert "The vault opens with PLUM-7731." in context
