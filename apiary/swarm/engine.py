"""Running one execution from its id: load, run (or resume) the graph, finish the record.

`SwarmEngine.run` is what both runners call (the in-process one and the Celery task). It is
safe to call again for the same execution: a finished one is left alone, an unfinished one
resumes from its last LangGraph checkpoint, whose stored task writes mean sub-agents that
had finished are neither re-run nor charged again.

The work is split by job: `prompts` (what the model is told), `phases` (the graph's
decompose, sub-agent and synthesize nodes), `tool_loop` (a sub-agent's model and tool
calls), `progress` (what a run records as it goes) and `lifecycle` (one run: prepared,
leased, watched for a cancel, finished with its figures).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from apiary.authz.scope import TenantScope
from apiary.db import session_scope
from apiary.executions.repository import execution_repository
from apiary.observability import tracing
from apiary.swarm.checkpoint import DatabaseSaver
from apiary.swarm.context import SwarmDeps
from apiary.swarm.graph import build_graph
from apiary.swarm.lease import ExecutionBusy, Lease
from apiary.swarm.lifecycle import prepare, run_leased
from apiary.swarm.phases import PHASES
from apiary.swarm.slots import Slots

log = logging.getLogger("apiary.swarm")


class SwarmEngine:
    """Runs executions in this process: owns the compiled graph and, embedded, the tenants'
    sub-agent slots. Built once per process by the composition root (`Runtime.swarm`)."""

    def __init__(self, deps: SwarmDeps) -> None:
        self.deps = deps
        # Built once (compiling costs milliseconds), then run for every execution with its
        # own thread id.
        self.saver = DatabaseSaver(deps.session_factory, deps.writes)
        self.graph = build_graph(self.saver, PHASES)
        # Embedded (no Redis): a semaphore per tenant bounds its running sub-agents here.
        self._local_slots: dict[uuid.UUID, asyncio.Semaphore] = {}

    def tenant_slots(self, tenant_id: uuid.UUID) -> Slots:
        if self.deps.swarm_slots is not None:
            return self.deps.swarm_slots.of(tenant_id)  # every process's sub-agents, in Redis
        slots = self._local_slots.get(tenant_id)
        if slots is None:
            slots = asyncio.Semaphore(self.deps.settings.swarm.tenant_concurrency)
            self._local_slots[tenant_id] = slots
        return slots

    async def run(self, execution_id: uuid.UUID) -> None:
        """Run or resume one execution to a final state. Safe to call more than once, even
        at the same time: a second run raises `ExecutionBusy` while the first holds the
        lease."""
        attributes = {"apiary.execution_id": str(execution_id)}
        with tracing.span("apiary.execution", attributes=attributes):
            await self._run(execution_id)

    async def _run(self, execution_id: uuid.UUID) -> None:
        # Finding it, claiming its lease, loading it and counting the attempt: one
        # transaction (rolled back, so nothing claimed, if any of it fails).
        async with session_scope(self.deps.session_factory) as session:
            found = await execution_repository.tenant_and_state(session, execution_id)
            if found is None:
                log.warning("execution %s no longer exists; nothing to run", execution_id)
                return
            tenant_id, state = found
            scope = TenantScope(tenant_id)
            lease = Lease(
                self.deps.session_factory,
                scope,
                execution_id,
                ttl_s=self.deps.settings.swarm.lease_s,
            )
            try:
                await lease.claim(session)
            except ExecutionBusy:
                if state.finished:
                    return  # its run is wrapping up (the lease goes last): nothing left to do
                raise
            context, execution = await prepare(
                self.deps, self.saver, self.tenant_slots(tenant_id), session, scope, execution_id
            )
        try:
            await run_leased(self.graph, lease, context, execution)
        finally:
            await lease.release()
