"""What a run records as it goes: its state, a phase's figures, a subtask's row, and the
model's streamed text as `token` events. Each is a write (or an event) for the caller to
store with its next event, in one transaction."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from apiary.db import Write, utcnow
from apiary.executions.event_types import StateChanged, TokensStreamed
from apiary.executions.figures import Phase, PhaseFigures
from apiary.executions.models import ExecutionState
from apiary.executions.repository import execution_repository
from apiary.swarm.calls import Tally
from apiary.swarm.context import SwarmContext

TOKEN_EVENT_EVERY_S = 0.1  # streamed text becomes at most one event per this, per stream


def state_change(context: SwarmContext, state: ExecutionState) -> tuple[StateChanged, Write]:
    """A new state: its event, and the write that stores it (to go in one transaction)."""
    change = execution_repository.execution_write(
        context.scope, context.execution_id, {"state": state.value, "updated_at": utcnow()}
    )
    return StateChanged(state=state), change


def set_state_soon(context: SwarmContext, state: ExecutionState) -> asyncio.Future[None]:
    """A new state, stored while the phase's model call is sent (the caller awaits it
    before the phase ends: queued first, it is committed before the phase's next event)."""
    event, change = state_change(context, state)
    return context.events.emit_soon(event, alongside=[change])


def phase_write(context: SwarmContext, phase: Phase, tally: Tally, seconds: float) -> Write:
    """A phase's figures, written with the run's next event (the run keeps them all, so
    nothing is read back)."""
    context.phases[phase] = PhaseFigures(
        seconds=round(seconds, 4),
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        cost_usd=tally.cost_usd,
        calls=tally.calls,
    )
    phases = {name.value: figures.model_dump() for name, figures in context.phases.items()}
    return execution_repository.execution_write(
        context.scope, context.execution_id, {"figures": {"phases": phases}}
    )


def subtask_update(context: SwarmContext, index: int, **values: Any) -> Write:
    return execution_repository.subtask_write(context.scope, context.execution_id, index, values)


class TokenStream:
    """A model call's streamed text as `token` events (with the sub-agent's index, or none
    for the synthesis), at most one per `TOKEN_EVENT_EVERY_S`: a chunk waits for those that
    follow it within that time, so a hundred sub-agents streaming do not write an event per
    chunk each, and a short answer streamed at once is one event."""

    def __init__(self, context: SwarmContext, subtask: int | None = None) -> None:
        self._events = context.events
        self._subtask = subtask
        self._pending: list[str] = []
        self._since: float | None = None  # when the oldest text not yet sent arrived

    async def add(self, text: str) -> None:
        self._pending.append(text)
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since >= TOKEN_EVENT_EVERY_S:
            await self.flush()

    def take(self) -> list[TokensStreamed]:
        """The text not sent yet, as a token event for the caller to store with its next
        event (one commit for both)."""
        if not self._pending:
            return []
        text = "".join(self._pending)
        self._pending.clear()
        self._since = None
        if self._subtask is None:
            return [TokensStreamed(text=text)]  # the synthesis's: no `subtask` at all
        return [TokensStreamed(text=text, subtask=self._subtask)]

    async def flush(self) -> None:
        await self._events.emit_all(self.take())
