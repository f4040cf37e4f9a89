"""API schemas for the gateway's read-only views (the OpenAI-compatible API has its own)."""

from __future__ import annotations

from pydantic import Field

from apiary.gateway.resilience import BreakerState
from apiary.kit.schemas import Schema


class ProviderHealth(Schema):
    name: str
    kind: str
    models: list[str]
    breaker: BreakerState = Field(
        description="closed: calls go through; open: calls skip this provider (fallback); "
        "half_open: the next call is a trial that closes or reopens it"
    )
    consecutive_failures: int
    retry_in_s: float | None = Field(
        description="While open, seconds until a trial call is let through"
    )


class ProvidersHealth(Schema):
    providers: list[ProviderHealth] = Field(
        description="In configuration order; breaker states are this server process's own"
    )
