"""Routes under /api/v1/providers: the configured providers and their circuit breakers.

Read-only and tenant-neutral: providers are platform configuration, and the view names no
URL, key or deployment. Each process keeps its own breakers, so with several replicas this
is the state of the one that answered.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authorize
from apiary.authz.permissions import Permission
from apiary.gateway.schemas import ProviderHealth, ProvidersHealth
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/providers", tags=["providers"])

Reader = Annotated[AuthContext, authorize(Permission.PROVIDERS_READ)]


@router.get("/health", summary="Each provider's circuit-breaker state, as this process sees it")
async def providers_health(auth: Reader, runtime: RuntimeDep) -> ProvidersHealth:
    chain = runtime.providers
    providers = []
    for config in chain.config.providers:
        breaker = chain.handles[config.name].breaker
        retry_in = breaker.seconds_until_trial()
        providers.append(
            ProviderHealth(
                name=config.name,
                kind=config.kind,
                models=list(config.models),
                breaker=breaker.state,
                consecutive_failures=breaker.consecutive_failures,
                retry_in_s=round(retry_in, 1) if retry_in is not None else None,
            )
        )
    return ProvidersHealth(providers=providers)
