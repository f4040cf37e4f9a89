"""Conversation memory: the earlier turns of a thread as context for its next execution.

Turns are kept in full; when they no longer fit `token_limit`, the oldest are folded into
one summary (a model call through the gateway, made by the execution that needed it) and
only the newest turns are given verbatim. Turns and summaries live in the database on
both deployments, so a thread survives restarts and is shared by every worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from apiary.authz.scope import TenantScope
from apiary.db import session_scope, utcnow
from apiary.gateway import tokens
from apiary.memory.models import ThreadSummary, ThreadTurn
from apiary.memory.repository import memory_repository
from apiary.runtime import Runtime

DEFAULT_TOKEN_LIMIT = 1500
Summarize = Callable[[str], Awaitable[str]]


def _turn_text(turn: ThreadTurn) -> str:
    return f"User: {turn.task}\nAssistant: {turn.answer}"


class MemoryService:
    async def record_turn(
        self,
        runtime: Runtime,
        *,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        thread_id: str,
        execution_id: uuid.UUID,
        task: str,
        answer: str,
    ) -> None:
        scope = TenantScope(tenant_id)
        async with session_scope(runtime.session_factory) as session:
            if await memory_repository.has_turn(session, scope, execution_id):
                return  # a resumed run finishing twice records the turn once
            memory_repository.add(
                session,
                scope,
                ThreadTurn(
                    agent_id=agent_id,
                    thread_id=thread_id,
                    execution_id=execution_id,
                    task=task,
                    answer=answer,
                ),
            )

    async def context_text(
        self,
        runtime: Runtime,
        *,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        thread_id: str,
        token_limit: int = DEFAULT_TOKEN_LIMIT,
        summarize: Summarize | None = None,
    ) -> str:
        """The thread so far, within about `token_limit` tokens; '' for a new thread."""
        scope = TenantScope(tenant_id)
        async with session_scope(runtime.session_factory) as session:
            turns = await memory_repository.turns(
                session, scope, agent_id=agent_id, thread_id=thread_id
            )
            summary = await memory_repository.summary(
                session, scope, agent_id=agent_id, thread_id=thread_id
            )
        covered = summary.turns if summary else 0
        recent = list(turns[covered:])
        kept: list[ThreadTurn] = []
        used = 0
        for turn in reversed(recent):
            size = tokens.count_text(_turn_text(turn))
            if kept and used + size > token_limit:
                break
            kept.insert(0, turn)
            used += size
        older = recent[: len(recent) - len(kept)]
        summary_text = summary.summary if summary else ""
        if older:
            if summarize is not None:
                summary_text = await self._fold(
                    runtime, scope, agent_id, thread_id, summary_text, older, covered, summarize
                )
            else:  # a reader without a model: the oldest turns are simply left out
                summary_text = summary_text or ""
        parts = []
        if summary_text:
            parts.append(f"Summary of the earlier conversation:\n{summary_text}")
        parts.extend(_turn_text(turn) for turn in kept)
        return "\n\n".join(parts)

    async def _fold(
        self,
        runtime: Runtime,
        scope: TenantScope,
        agent_id: uuid.UUID,
        thread_id: str,
        previous: str,
        older: Sequence[ThreadTurn],
        covered: int,
        summarize: Summarize,
    ) -> str:
        text = "\n\n".join(_turn_text(turn) for turn in older)
        source = f"{previous}\n\n{text}" if previous else text
        summary_text = await summarize(source)
        async with session_scope(runtime.session_factory) as session:
            row = await memory_repository.summary(
                session, scope, agent_id=agent_id, thread_id=thread_id
            )
            if row is None:
                memory_repository.add(
                    session,
                    scope,
                    ThreadSummary(
                        agent_id=agent_id,
                        thread_id=thread_id,
                        summary=summary_text,
                        turns=covered + len(older),
                    ),
                )
            else:
                row.summary = summary_text
                row.turns = covered + len(older)
                row.updated_at = utcnow()
        return summary_text


memory_service = MemoryService()
