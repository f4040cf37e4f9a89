from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin


class LedgerEntry(IdMixin, TenantOwned, Base):
    """One model call: who made it, what served it, what it cost, and how it went."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_tenant_time", "tenant_id", "created_at"),
        # The export filtered by key, and retention's per-tenant deletes.
        Index("ix_ledger_entries_tenant_key_time", "tenant_id", "api_key_id", "created_at"),
    )

    api_key_id: Mapped[uuid.UUID | None]
    user_id: Mapped[uuid.UUID | None]
    execution_id: Mapped[uuid.UUID | None]
    agent_id: Mapped[uuid.UUID | None]
    kind: Mapped[str] = mapped_column(String(20))  # chat | embedding
    requested_model: Mapped[str] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(default=False)  # no usage from upstream
    cost_usd: Mapped[float | None] = mapped_column(Float)  # None: the model has no price
    priced: Mapped[bool] = mapped_column(default=True)
    cache_hit: Mapped[bool] = mapped_column(default=False)
    saved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    fallback_path: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20))  # ok | error
    error: Mapped[str | None] = mapped_column(String(500))
    streamed: Mapped[bool] = mapped_column(default=False)


class LedgerRollup(Base):
    """The ledger summed per tenant, hour (or UTC day, or month) and combination of the dimensions
    reports group by. Written in the same transaction as the entries it sums (the ledger
    writer's batches), so it is never behind the raw rows and outlives their retention.

    `dims` is a digest of the dimension values: the conflict target of the upsert, since
    nullable columns (route, api key, ...) cannot be in a unique key both databases honour.
    """

    __tablename__ = "ledger_rollups"
    __table_args__ = (Index("ix_ledger_rollups_period_bucket", "period", "bucket_start"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(5), primary_key=True)  # hour | day | month
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    dims: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    priced: Mapped[bool]
    cache_hit: Mapped[bool]
    model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    route: Mapped[str | None] = mapped_column(String(100))
    api_key_id: Mapped[uuid.UUID | None]
    agent_id: Mapped[uuid.UUID | None]
    calls: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    billable_cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)  # over priced calls only
    unpriced_calls: Mapped[int] = mapped_column(BigInteger)
    cache_hits: Mapped[int] = mapped_column(BigInteger)
    saved_usd: Mapped[float] = mapped_column(Float)
