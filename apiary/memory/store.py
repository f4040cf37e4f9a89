"""Where conversation threads are kept: the one small protocol both stores implement.

The database store (`database_store.py`) is the embedded default; the Redis store
(`redis_store.py`) is used when `APIARY_REDIS_URL` is set, like the counters and the
notifier. The memory service decides what a thread's context is; a store only keeps turns
and summaries, always inside one tenant's scope.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from apiary.authz.scope import TenantScope


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished execution in a thread: what was asked and what was answered."""

    execution_id: uuid.UUID
    task: str
    answer: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Summary:
    """The summary of a thread's oldest turns."""

    text: str
    turns: int  # how many of the oldest turns it covers


@dataclass(frozen=True, slots=True)
class Thread:
    summary: Summary | None
    turns: list[Turn]  # oldest first, only those the summary does not cover


class MemoryStore(Protocol):
    async def thread(self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str) -> Thread:
        """The thread's summary and its newer turns; empty for a thread never seen."""
        ...

    async def append(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, turn: Turn
    ) -> bool:
        """Add `turn` unless its execution already has one; True when this call added it."""
        ...

    async def save_summary(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, summary: Summary
    ) -> None: ...

    async def forget_agent(self, scope: TenantScope, agent_id: uuid.UUID) -> None:
        """Drop every thread of an agent that is being deleted."""
        ...

    async def close(self) -> None: ...


class MemoryDeps(Protocol):
    """What memory's callers need from their process: the store."""

    memory: MemoryStore  # Redis when configured, else the database
