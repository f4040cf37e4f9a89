"""Conversation memory: the earlier turns of a thread as context for its next execution.

Turns are kept in full; when they no longer fit `token_limit`, the oldest are folded into
one summary (a model call through the gateway, made by the execution that needed it) and
only the newest turns are given verbatim. Where turns and summaries are kept is the
runtime's memory store: Redis when configured, else the database (see `store.py`); both
outlive a restart and are shared by every worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.kit import tokens
from apiary.memory.store import MemoryDeps, Summary, Turn

DEFAULT_TOKEN_LIMIT = 1500
Summarize = Callable[[str], Awaitable[str]]


def _turn_text(turn: Turn) -> str:
    return f"User: {turn.task}\nAssistant: {turn.answer}"


class MemoryService:
    async def record_turn(
        self,
        deps: MemoryDeps,
        *,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        thread_id: str,
        execution_id: uuid.UUID,
        task: str,
        answer: str,
    ) -> None:
        """Add a finished execution to its thread; a resumed run finishing twice adds it once."""
        turn = Turn(execution_id=execution_id, task=task, answer=answer, created_at=utcnow())
        await deps.memory.append(
            TenantScope(tenant_id), agent_id=agent_id, thread_id=thread_id, turn=turn
        )

    async def context_text(
        self,
        deps: MemoryDeps,
        *,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        thread_id: str,
        token_limit: int = DEFAULT_TOKEN_LIMIT,
        summarize: Summarize | None = None,
    ) -> str:
        """The thread so far, within about `token_limit` tokens; '' for a new thread."""
        scope = TenantScope(tenant_id)
        thread = await deps.memory.thread(scope, agent_id=agent_id, thread_id=thread_id)
        kept: list[Turn] = []
        used = 0
        for turn in reversed(thread.turns):
            size = tokens.count_text(_turn_text(turn))
            if kept and used + size > token_limit:
                break
            kept.insert(0, turn)
            used += size
        older = thread.turns[: len(thread.turns) - len(kept)]
        summary = thread.summary
        # Without a model (the memory tool) the oldest turns are simply left out.
        if older and summarize is not None:
            text = "\n\n".join(_turn_text(turn) for turn in older)
            source = f"{summary.text}\n\n{text}" if summary else text
            summary = Summary(
                text=await summarize(source), turns=(summary.turns if summary else 0) + len(older)
            )
            await deps.memory.save_summary(
                scope, agent_id=agent_id, thread_id=thread_id, summary=summary
            )
        parts = []
        if summary is not None and summary.text:
            parts.append(f"Summary of the earlier conversation:\n{summary.text}")
        parts.extend(_turn_text(turn) for turn in kept)
        return "\n\n".join(parts)


memory_service = MemoryService()
