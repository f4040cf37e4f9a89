"""What every node of one execution's graph shares: the runtime, the caller, the limits."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apiary.auth.context import AuthContext
from apiary.authz.scope import TenantScope
from apiary.executions.events import EventRecorder
from apiary.runtime import Runtime
from apiary.swarm.calls import Spend
from apiary.swarm.slots import Slots


@dataclass
class SwarmContext:
    runtime: Runtime
    execution_id: uuid.UUID
    scope: TenantScope
    auth: AuthContext  # the execution's creator, stamped with execution and agent ids
    agent: dict[str, Any]  # the agent definition the execution runs
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
    phases: dict[str, Any] = field(default_factory=dict)  # figures by phase, as stored
    started_at: datetime | None = None  # when the execution's first run started
    resumed: bool = False  # not the execution's first run: rows of the last one may exist
