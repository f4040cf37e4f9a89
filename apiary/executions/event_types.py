"""The events of an execution, typed: one model per event's `data`, and the event itself as a
union discriminated on `type`.

The engine emits instances of the data models (`EventRecorder.emit(SubagentStarted(...))`),
so a misspelt event or field fails type checking, and a value of the wrong type fails
validation before anything is stored. The wire format is unchanged: `{seq, type, data,
created_at}`, `data` holding the fields given (a field left at its default and not given,
such as a synthesis token's `subtask`, is absent rather than null).

The API documents `ExecutionEvent` (the union) for the SSE and WebSocket streams, so the
OpenAPI spec, and the dashboard's generated types, know each event's data.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, RootModel

from apiary.executions.figures import ExecutionFigures
from apiary.executions.models import ExecutionState, FinishedExecutionState, SubtaskStatus
from apiary.kit.schemas import Schema


class ExecutionEventType(StrEnum):
    STATE = "state"
    DECOMPOSITION_DEGRADED = "decomposition_degraded"
    SUBTASKS_PLANNED = "subtasks_planned"
    SUBAGENT_STARTED = "subagent_started"
    SUBAGENT_RETRY = "subagent_retry"
    TOOL_CALL = "tool_call"
    SUBAGENT_FINISHED = "subagent_finished"
    TOKEN = "token"  # noqa: S105 - an event's name, not a secret
    RESUMED = "resumed"
    DONE = "done"


class EventData(Schema):
    """The data of one event; `type` says which."""

    # Built by the engine from its own values; forbidding extras catches a misspelt field at
    # run time too, where the type checker did not look.
    model_config = ConfigDict(extra="forbid")

    type: ClassVar[ExecutionEventType]

    def wire(self) -> dict[str, Any]:
        """The data as stored and sent: JSON values, only the fields given."""
        return self.model_dump(mode="json", exclude_unset=True)


class StateChanged(EventData):
    type = ExecutionEventType.STATE
    state: ExecutionState


class DecompositionDegraded(EventData):
    """The orchestrator's plan could not be read: the task runs as one sub-agent."""

    type = ExecutionEventType.DECOMPOSITION_DEGRADED
    reason: str


class SubtasksPlanned(EventData):
    type = ExecutionEventType.SUBTASKS_PLANNED
    subtasks: list[str] = Field(description="Each sub-agent's prompt, by index")


class SubagentStarted(EventData):
    type = ExecutionEventType.SUBAGENT_STARTED
    subtask: int = Field(description="The sub-agent's index (0-based)")
    prompt: str = Field(description="Its prompt, cut at 500 characters")


class SubagentRetry(EventData):
    """A sub-agent's attempt failed; it is tried again."""

    type = ExecutionEventType.SUBAGENT_RETRY
    subtask: int
    error: str


class ToolCalled(EventData):
    type = ExecutionEventType.TOOL_CALL
    subtask: int
    tool: str
    output: str = Field(description="What the tool returned, cut at 500 characters")


class SubagentFinished(EventData):
    type = ExecutionEventType.SUBAGENT_FINISHED
    subtask: int
    status: SubtaskStatus
    seconds: float
    cost_usd: float = Field(description="This sub-agent's model calls")
    spent_usd: float = Field(description="The execution's spending so far")
    error: str | None


class TokensStreamed(EventData):
    """Streamed model text: a sub-agent's answer (with its index) or the synthesis (without)."""

    type = ExecutionEventType.TOKEN
    text: str
    subtask: int | None = Field(default=None, description="Absent for the synthesis")


class Resumed(EventData):
    """Another run took the execution over from its last checkpoint."""

    type = ExecutionEventType.RESUMED
    attempt: int


class Done(EventData):
    """The last event: the execution's final state."""

    type = ExecutionEventType.DONE
    answer: str | None
    error: str | None
    state: FinishedExecutionState
    cost_usd: float
    figures: ExecutionFigures


class _Event(Schema):
    seq: int = Field(description="1, 2, 3... within the execution; resume after any of them")
    created_at: datetime


class StateChangedEvent(_Event):
    type: Literal[ExecutionEventType.STATE]
    data: StateChanged


class DecompositionDegradedEvent(_Event):
    type: Literal[ExecutionEventType.DECOMPOSITION_DEGRADED]
    data: DecompositionDegraded


class SubtasksPlannedEvent(_Event):
    type: Literal[ExecutionEventType.SUBTASKS_PLANNED]
    data: SubtasksPlanned


class SubagentStartedEvent(_Event):
    type: Literal[ExecutionEventType.SUBAGENT_STARTED]
    data: SubagentStarted


class SubagentRetryEvent(_Event):
    type: Literal[ExecutionEventType.SUBAGENT_RETRY]
    data: SubagentRetry


class ToolCalledEvent(_Event):
    type: Literal[ExecutionEventType.TOOL_CALL]
    data: ToolCalled


class SubagentFinishedEvent(_Event):
    type: Literal[ExecutionEventType.SUBAGENT_FINISHED]
    data: SubagentFinished


class TokensStreamedEvent(_Event):
    type: Literal[ExecutionEventType.TOKEN]
    data: TokensStreamed


class ResumedEvent(_Event):
    type: Literal[ExecutionEventType.RESUMED]
    data: Resumed


class DoneEvent(_Event):
    type: Literal[ExecutionEventType.DONE]
    data: Done


EventOfAnyType = Annotated[
    StateChangedEvent
    | DecompositionDegradedEvent
    | SubtasksPlannedEvent
    | SubagentStartedEvent
    | SubagentRetryEvent
    | ToolCalledEvent
    | SubagentFinishedEvent
    | TokensStreamedEvent
    | ResumedEvent
    | DoneEvent,
    Field(discriminator="type"),
]


class ExecutionEvent(RootModel[EventOfAnyType]):
    """One event as the streams send it (`GET .../events` as SSE, `.../ws`): `type` says
    which, and what its `data` holds."""
