"""The composition root: every process-wide object a running Apiary shares, built in one
place (`Runtime.build`) and closed in one place.

`create_app` (the API), the worker's start-up (`apiary.worker.process`) and CLI commands
build one; request handlers reach it through the `RuntimeDep` dependency, never through
module globals. No domain module imports this one: each declares what it needs (a class
taking its parts, or a Protocol of the few attributes it reads), and this module hands
them over, so the import graph has no cycle (tests/test_import_layers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from apiary.alerts.runner import AlertRunner
from apiary.api_keys.last_used import LastUsedRecorder
from apiary.auth.key_cache import KeyCache
from apiary.auth.oidc import OIDCVerifier
from apiary.config import Settings
from apiary.crypto.keyring import Keyring, build_keyring
from apiary.db import GroupCommit
from apiary.gateway.cache import ResponseCache
from apiary.gateway.chain import ProviderChain
from apiary.gateway.client import GatewayClient
from apiary.gateway.http import HttpClient
from apiary.kit.notify import Notifier
from apiary.knowledge.queue import JobQueue
from apiary.knowledge.vectors import VectorStore
from apiary.kv import CounterStore, MemoryCounterStore
from apiary.limits.enforcer import LimitEnforcer
from apiary.memory.database_store import DatabaseMemoryStore
from apiary.memory.encrypted_store import EncryptedMemoryStore
from apiary.memory.redis_store import RedisMemoryStore
from apiary.memory.store import MemoryStore
from apiary.observability import tracing
from apiary.resources import Resources
from apiary.responses.writer import ResponseWriter
from apiary.swarm.slots import RedisSlots
from apiary.usage.ledger import LedgerWriter
from apiary.worker.runner import Runner, create_runner

if TYPE_CHECKING:
    from datetime import datetime

    from redis.asyncio import Redis

    from apiary.embeddings.minilm import MiniLMEmbedder
    from apiary.gateway.semantic_cache import SemanticCache
    from apiary.swarm.engine import SwarmEngine


@dataclass
class Runtime:
    # The process resources (apiary.resources), also reachable by their own names below.
    resources: Resources
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    lookups: async_sessionmaker[AsyncSession]  # a lone read outside a transaction (auth)
    writes: GroupCommit  # small concurrent writes (swarm events, subtasks, checkpoints)
    redis: Redis | None  # the one Redis client (apiary.kit.redis), when configured
    counters: CounterStore
    http: httpx.AsyncClient
    providers: ProviderChain  # routing, retries, breakers, fallback across providers
    client: GatewayClient  # the gateway's call flow (cache, limits, chain, ledger)
    ledger: LedgerWriter
    upstream: HttpClient
    cache: ResponseCache
    key_usage: LastUsedRecorder
    semantic_cache: SemanticCache | None
    limits: LimitEnforcer
    vectors: VectorStore  # Qdrant; opened on first use (local mode locks its folder)
    ingestion: JobQueue  # knowledge ingestion jobs (document ids), in process for now
    notifier: Notifier
    # Tenants' data keys: documents and memory encrypted at rest (apiary/crypto/).
    encryption: Keyring
    memory: MemoryStore  # conversation threads: Redis when configured, else the database
    stored_responses: ResponseWriter  # /v1/responses answers, written behind the request
    alerts: AlertRunner  # alerts raised off a transaction, and their deliveries' sending
    oidc: OIDCVerifier | None = field(default=None)
    # API keys verified in the last seconds: a /v1 call need not ask the database who calls.
    key_cache: KeyCache = field(default_factory=KeyCache)
    # The swarm's per-tenant bound on running sub-agents: in Redis, shared by every process,
    # when configured; else a semaphore per tenant here (`apiary.swarm.slots`).
    swarm_slots: RedisSlots | None = None
    traces: bool = False  # this runtime installed the process's tracer (and shuts it down)
    # How executions run: in this process, or published to the Celery workers.
    runner: Runner = field(init=False)

    @cached_property
    def embedder(self) -> MiniLMEmbedder:
        """The bundled MiniLM (knowledge bases' default model), on first use: it brings
        numpy, tokenizers and ONNX Runtime, which a process that never embeds should not
        import. Its graph is built on its first call."""
        return _minilm()

    @cached_property
    def swarm(self) -> SwarmEngine:
        """The swarm engine (its compiled graph and the tenants' sub-agent slots), built on
        first use: LangGraph is imported only by processes that run executions."""
        from apiary.kit import heap
        from apiary.swarm.engine import SwarmEngine

        heap.settle("swarm engine")  # LangGraph is imported now: out of the collector's way
        return SwarmEngine(self)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        resources = Resources.open(settings)
        session_factory, writes, redis = (
            resources.session_factory,
            resources.writes,
            resources.redis,
        )
        upstream = HttpClient()
        counters = _counters(redis)
        alerts = AlertRunner(session_factory, settings.alerts)
        providers = ProviderChain(settings.gateway, upstream, on_breaker_open=alerts)
        cache = ResponseCache(
            redis=redis,
            ttl_s=settings.cache.ttl_s,
            max_entries=settings.cache.max_entries,
        )
        semantic_cache = _semantic_cache(settings) if settings.cache.semantic else None
        limits = LimitEnforcer(counters, session_factory, on_budget=alerts)
        ledger = LedgerWriter(session_factory)
        encryption = build_keyring(settings.encryption, session_factory)
        runtime = cls(
            traces=tracing.install(settings.otel),
            resources=resources,
            settings=settings,
            engine=resources.engine,
            session_factory=session_factory,
            lookups=resources.lookups,
            writes=writes,
            redis=redis,
            counters=counters,
            http=resources.http,
            providers=providers,
            client=GatewayClient(
                providers,
                cache=cache,
                semantic_cache=semantic_cache,
                limits=limits,
                ledger=ledger,
            ),
            ledger=ledger,
            upstream=upstream,
            cache=cache,
            semantic_cache=semantic_cache,
            key_usage=LastUsedRecorder(session_factory),
            limits=limits,
            vectors=VectorStore(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key.get_secret_value()
                if settings.qdrant_api_key
                else None,
                path=settings.qdrant_path,
            ),
            ingestion=JobQueue("ingestion", workers=settings.knowledge.ingest_workers),
            oidc=OIDCVerifier(settings.oidc, resources.http) if settings.oidc else None,
            notifier=resources.notifier,
            encryption=encryption,
            memory=EncryptedMemoryStore(
                RedisMemoryStore(redis, idle_ttl_s=settings.swarm.memory_ttl_s)
                if redis
                else DatabaseMemoryStore(session_factory),
                encryption,
            ),
            stored_responses=ResponseWriter(writes, interval_s=settings.responses.write_interval_s),
            alerts=alerts,
            swarm_slots=RedisSlots(redis, limit=settings.swarm.tenant_concurrency)
            if redis
            else None,
        )
        runtime.runner = create_runner(
            settings,
            run=runtime._run_execution,
            unfinished=runtime._unfinished_executions,
            idle_unfinished=runtime._idle_executions,
            redis=redis,
        )
        return runtime

    def start(self) -> None:
        """Start background work (the ledger writer); needs the running event loop."""
        self.ledger.start()
        self.key_usage.start()
        self.stored_responses.start()
        self.alerts.start()
        self.ingestion.start(self._ingest, backlog=self._unfinished_ingestions)

    async def _ingest(self, document_id: uuid.UUID) -> None:
        from apiary.knowledge.tasks import ingest_document

        await ingest_document(self, document_id)

    async def _unfinished_ingestions(self) -> list[uuid.UUID]:
        # The repository, not the tasks module: that one loads the parsers and the
        # embedding model, which a process that has nothing to ingest should never pay for.
        from apiary.knowledge.repository import knowledge_repository

        async with self.session_factory() as session:
            return await knowledge_repository.unfinished_document_ids(session)

    async def _run_execution(self, execution_id: uuid.UUID) -> None:
        await self.swarm.run(execution_id)

    async def _unfinished_executions(self) -> list[uuid.UUID]:
        from apiary.executions.repository import execution_repository

        async with self.session_factory() as session:
            return list(await execution_repository.unfinished_ids(session))

    async def _idle_executions(self, idle_since: datetime) -> list[uuid.UUID]:
        from apiary.executions.repository import execution_repository

        async with self.session_factory() as session:
            return await execution_repository.idle_unfinished(session, idle_since)

    async def start_runner(self) -> None:
        """Start running executions here (in-process runner), resuming unfinished ones."""
        await self.runner.start()

    async def close(self) -> None:
        await self.ingestion.close()
        await asyncio.to_thread(self.vectors.close)
        await self.runner.close()
        await self.stored_responses.close()
        await self.alerts.close()  # what was raised is written before the pool goes
        with contextlib.suppress(Exception):  # a database already gone loses nothing more here
            await self.writes.barrier()  # what the stopped runs queued lands before the pool goes
        await self.ledger.close()
        await self.key_usage.close()
        await self.cache.close()
        await self.providers.close()
        await self.upstream.close()
        self.limits.give_back_leases()  # queued for the counters' last round trip, below
        await self.counters.close()
        await self.memory.close()
        await self.encryption.close()
        if self.swarm_slots is not None:
            await self.swarm_slots.close()
        await self.resources.close()  # last: what uses them has stopped
        if self.traces:
            await asyncio.to_thread(tracing.shutdown)  # exports what is still buffered


async def _runtime(request: Request) -> Runtime:  # async: no worker-thread hop per request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _minilm() -> MiniLMEmbedder:
    from apiary.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder()


def _semantic_cache(settings: Settings) -> SemanticCache:
    # Imported only when enabled: the embedding model brings numpy, tokenizers and ONNX
    # Runtime. (Its own MiniLMEmbedder: the loaded model is shared by every instance.)
    from apiary.gateway.semantic_cache import SemanticCache

    return SemanticCache(
        _minilm(),
        threshold=settings.cache.semantic_threshold,
        ttl_s=settings.cache.ttl_s,
    )


def _counters(redis: Redis | None) -> CounterStore:
    if redis is None:
        return MemoryCounterStore()
    from apiary.kv.redis_store import RedisCounterStore  # redis-py only when configured

    return RedisCounterStore(redis)
