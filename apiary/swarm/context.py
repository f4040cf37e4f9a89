"""What every node of one execution's graph shares: the process's parts it uses, the caller,
the limits."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from apiary.agents.schemas import AgentDefinition
from apiary.auth.context import AuthContext
from apiary.authz.scope import TenantScope
from apiary.executions.events import EventDeps, EventRecorder
from apiary.executions.figures import Phase, PhaseFigures
from apiary.swarm.calls import CallDeps, Spend
from apiary.swarm.checkpoint import DatabaseSaver
from apiary.swarm.slots import RedisSlots, Slots
from apiary.swarm.tools import ToolDeps
from apiary.usage.ledger import LedgerWriter


class SwarmDeps(CallDeps, EventDeps, ToolDeps, Protocol):
    """What the swarm engine needs from its process (the composition root satisfies it)."""

    ledger: LedgerWriter  # sub-agents' charges, stored with their results
    swarm_slots: RedisSlots | None  # the tenants' bound across processes, with Redis


@dataclass
class SwarmContext:
    deps: SwarmDeps
    saver: DatabaseSaver  # the graph's checkpointer: task writes stored, a thread deleted
    execution_id: uuid.UUID
    scope: TenantScope
    auth: AuthContext  # the execution's creator, stamped with execution and agent ids
    agent: AgentDefinition  # the definition the execution runs
    mode: str
    max_agents: int
    spend: Spend
    events: EventRecorder
    slots: asyncio.Semaphore  # sub-agents of this execution at once
    tenant_slots: Slots  # sub-agents of this tenant at once (apiary.swarm.slots)
    background: str = ""  # inputs and the thread's memory, given to every prompt
    thread_id: str | None = None
    task: str = ""  # the user's task, as given
    max_steps: int = 6
    phases: dict[Phase, PhaseFigures] = field(default_factory=dict)  # finished phases' figures
    started_at: datetime | None = None  # when the execution's first run started
    resumed: bool = False  # not the execution's first run: rows of the last one may exist
