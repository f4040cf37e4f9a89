"""The ledger writer's backlog as the metrics scrape reads it (`Ledger.pending`, exported
as `apiary_ledger_pending_entries`): a batch being written is still pending until it is
stored, so a write held up by the database does not read as an empty backlog."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.services  # the write is held up by a PostgreSQL table lock


async def test_a_batch_being_written_counts_as_pending(gateway: Gateway) -> None:
    ledger = gateway.runtime.ledger
    await ledger.flush()
    client = gateway.client()
    async with gateway.runtime.session_factory() as holder:
        # Another transaction holds the ledger: the writer's insert waits for it.
        await holder.execute(text("LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE"))
        await client.chat.completions.create(
            model="oai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert ledger.pending == 1
        writing = asyncio.create_task(ledger.flush())
        await asyncio.sleep(0.3)
        assert not writing.done(), "the write was not held up"
        assert ledger.pending == 1  # taken from the queue, not stored yet
        await holder.rollback()
    await asyncio.wait_for(writing, 10)
    assert ledger.pending == 0
    assert len(await gateway.ledger()) == 1
