"""An execution's figures: time, tokens and cost by phase, and how much the sub-agents ran in
parallel. Stored on the execution as JSON (`figures`), sent in its `done` event, and typed
here for both and for the API.

While it runs an execution holds only its finished phases; the rest is filled in when it
ends (`execution_figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from apiary.db import utcnow
from apiary.executions.models import SubtaskStatus
from apiary.executions.repository import SubtaskFigures
from apiary.kit.schemas import Schema


class Phase(StrEnum):
    DECOMPOSE = "decompose"
    SUBAGENTS = "subagents"  # all sub-agents, from the first start to the last end
    SYNTHESIZE = "synthesize"


class _Stored(Schema):
    # Read back from stored JSON: a field a later version dropped must not make an old
    # execution unreadable.
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class PhaseFigures(_Stored):
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    calls: int = Field(description="Model calls; for `subagents`, the sub-agents")


class SubagentCounts(_Stored):
    """How many of the execution's sub-agents ended in each status."""

    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0


class ExecutionFigures(_Stored):
    phases: dict[Phase, PhaseFigures] = Field(
        default_factory=dict, description="The phases run so far; a phase not run is absent"
    )
    wall_s: float | None = Field(default=None, description="Set when the execution ends")
    subagent_total_s: float | None = Field(
        default=None, description="The sub-agents' seconds added up"
    )
    speedup: float | None = Field(
        default=None, description="subagent_total_s over the sub-agents' wall time"
    )
    critical_path_s: float | None = Field(
        default=None, description="decompose + the slowest sub-agent + synthesize"
    )
    subagents: SubagentCounts | None = None


def seconds_between(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


def execution_figures(
    *,
    phases: Mapping[Phase, PhaseFigures],
    started_at: datetime | None,
    finished_at: datetime | None,
    subtasks: Sequence[SubtaskFigures],
) -> ExecutionFigures:
    """Wall time, sub-agent time, speedup, critical path, tokens and cost by phase."""
    durations = [seconds_between(s.started_at, s.finished_at) for s in subtasks if s.started_at]
    subagents = PhaseFigures(
        seconds=round(
            seconds_between(
                min((s.started_at for s in subtasks if s.started_at), default=None),
                max((s.finished_at for s in subtasks if s.finished_at), default=None),
            ),
            4,
        ),
        prompt_tokens=sum(s.prompt_tokens for s in subtasks),
        completion_tokens=sum(s.completion_tokens for s in subtasks),
        cost_usd=sum(s.cost_usd for s in subtasks),
        calls=len(subtasks),
    )
    all_phases = {**phases, Phase.SUBAGENTS: subagents}
    subagent_total = sum(durations)
    wall = seconds_between(started_at, finished_at or utcnow())
    decompose, synthesize = phases.get(Phase.DECOMPOSE), phases.get(Phase.SYNTHESIZE)
    critical = (
        (decompose.seconds if decompose else 0.0)
        + max(durations, default=0.0)
        + (synthesize.seconds if synthesize else 0.0)
    )
    return ExecutionFigures(
        phases=all_phases,
        wall_s=round(wall, 4),
        subagent_total_s=round(subagent_total, 4),
        speedup=round(subagent_total / subagents.seconds, 3) if subagents.seconds > 0 else None,
        critical_path_s=round(critical, 4),
        subagents=SubagentCounts(
            **{
                status.value: sum(1 for s in subtasks if s.status == status.value)
                for status in SubtaskStatus
            }
        ),
    )
