"""The stored-responses writer against the real database: batches, and a bad row alone."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from apiary.authz.scope import TenantScope
from apiary.db import new_id, utcnow
from apiary.responses.models import StoredResponse
from apiary.responses.writer import ResponseWriter
from apiary.runtime import Runtime
from tests.factories import make_tenant


def row(text: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "created_at": now,
        "expires_at": now + timedelta(days=1),
        "model": "gpt-4o-mini",
        "status": "completed",
        "previous_response_id": None,
        "document": {"output": [{"type": "message", "text": text}]},
        "context": [{"type": "message", "role": "user", "content": text}],
    }


async def test_a_row_the_database_refuses_is_dropped_alone(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime, client, "writer-co")
    scope = TenantScope(uuid.UUID(tenant.id))
    writer = ResponseWriter(runtime.writes, interval_s=60)
    kept, refused, also_kept = row("kept"), row("refused"), row("also kept")
    writer.save(scope, kept)
    writer.save(TenantScope(uuid.uuid4()), refused)  # a tenant deleted meanwhile: no such row
    writer.save(scope, also_kept)
    assert writer.pending(scope, kept["id"], now=utcnow()) == kept
    assert writer.pending(scope, refused["id"], now=utcnow()) is None  # not this tenant's

    await writer.flush()

    async with runtime.session_factory() as session:
        stored = set(await session.scalars(select(StoredResponse.id)))
    assert stored == {kept["id"], also_kept["id"]}
    assert writer.dropped == 1
    assert not writer.is_pending(kept["id"])
    assert not writer.is_pending(refused["id"])


async def test_a_full_queue_loses_its_oldest(runtime: Runtime, client: httpx.AsyncClient) -> None:
    tenant = await make_tenant(runtime, client, "queue-co")
    scope = TenantScope(uuid.UUID(tenant.id))
    writer = ResponseWriter(runtime.writes, interval_s=60, max_pending=2)
    rows = [row(f"n{i}") for i in range(3)]
    for values in rows:
        writer.save(scope, values)
    assert [writer.is_pending(values["id"]) for values in rows] == [False, True, True]
    assert writer.dropped == 1
