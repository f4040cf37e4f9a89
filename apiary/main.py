"""The FastAPI application: routers, middleware, error handlers, and the runtime's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from apiary import health, openapi
from apiary.agents import endpoints as agents
from apiary.alerts import endpoints as alerts
from apiary.api_keys import endpoints as api_keys
from apiary.audit import endpoints as audit
from apiary.audit.anchoring import AnchorSchedule
from apiary.auth import endpoints as auth
from apiary.auth.forwarded import TrustedProxies
from apiary.billing import endpoints as billing
from apiary.billing.defaults import load_default_plans
from apiary.config import Settings, load_settings
from apiary.dashboard import DEFAULT_DIST, mount_dashboard
from apiary.errors import ErrorAnsweringMiddleware, install_error_handlers
from apiary.executions import endpoints as executions
from apiary.gateway import anthropic_api, openai_api
from apiary.gateway import endpoints as providers
from apiary.graphql.endpoints import graphql_router
from apiary.kit import heap
from apiary.knowledge import endpoints as knowledge
from apiary.limits import endpoints as limits
from apiary.observability.metrics import ObservabilityMiddleware, metrics_response
from apiary.observability.platform import PlatformMetrics
from apiary.privacy import endpoints as privacy
from apiary.responses import endpoints as stored_responses
from apiary.responses.service import RetentionSweeper
from apiary.runtime import Runtime
from apiary.security_headers import SecurityHeadersMiddleware
from apiary.tenants import endpoints as tenants
from apiary.usage import endpoints as usage
from apiary.usage.retention import LedgerMaintainer
from apiary.users import endpoints as members

log = logging.getLogger("apiary")

API_PREFIX = "/api/v1"
_PLANS_TIMEOUT_S = 10.0  # how long start-up waits for the database to take new plans
# Every router under /api/v1. The isolation test walks exactly these (and the /v1 one),
# so a router added here is checked by it automatically.
API_ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    tenants.router,
    members.router,
    members.invitations_router,
    api_keys.router,
    audit.router,
    limits.router,
    usage.router,
    knowledge.router,
    agents.router,
    executions.router,
    providers.router,
    billing.router,
    billing.admin_router,
    alerts.router,
    privacy.router,
)
# The OpenAI-compatible API, at /v1 where OpenAI SDKs expect it.
OPENAI_ROUTERS: tuple[APIRouter, ...] = (openai_api.router, stored_responses.router)


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module_router in API_ROUTERS:
        router.include_router(module_router)
    return router


class ApiaryApp(FastAPI):
    """FastAPI, with the gateway's hot routes (`openai_api.HOT_ROUTES`) taken out before its
    middleware stack.

    A `/v1/chat/completions` call needs none of what FastAPI and Starlette put around every
    request (the look-up of an OpenTelemetry provider, the exception-telemetry and body-limit
    wrappers, the router), and at concurrency 1 their cost is a good part of the latency the
    gateway adds (docs/benchmarks.md). The call goes through the same outer error handler and
    observability middleware as any request, then straight to `OpenAIHotPath`, which has its
    own body limit. Every other request, lifespan and WebSocket takes FastAPI's usual path."""

    _hot_stack: ASGIApp | None = None
    _messages_stack: ASGIApp | None = None  # the Anthropic Messages API, served the same way
    # Set when APIARY_TRUSTED_PROXIES names the proxies in front: their X-Forwarded-* headers
    # are applied to the scope here, before either path, so both see the real client.
    trusted_proxies: TrustedProxies | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted_proxies is not None and scope["type"] != "lifespan":
            self.trusted_proxies.resolve(scope)
        if scope["type"] == "http" and scope["path"] in openai_api.HOT_ROUTES:
            if self._hot_stack is None:
                self._hot_stack = self._build_hot_stack()
            scope["app"] = self
            await self._hot_stack(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in anthropic_api.ROUTES:
            if self._messages_stack is None:
                self._messages_stack = self._build_hot_stack(anthropic_api.AnthropicHotPath())
            scope["app"] = self
            await self._messages_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _build_hot_stack(self, hot_path: ASGIApp | None = None) -> ASGIApp:
        # Built on first use, like FastAPI's own stack, so it sees the final error handlers.
        handler = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        hot_path = hot_path or openai_api.OpenAIHotPath()
        return ErrorAnsweringMiddleware(
            ObservabilityMiddleware(hot_path), handler=handler, debug=self.debug
        )

    def build_middleware_stack(self) -> ASGIApp:
        # FastAPI puts Starlette's ServerErrorMiddleware outermost; ours keeps the
        # connection of a request whose error it answered (see ErrorAnsweringMiddleware).
        stack = super().build_middleware_stack()
        assert isinstance(stack, ServerErrorMiddleware)
        return ErrorAnsweringMiddleware(stack.app, handler=stack.handler, debug=stack.debug)


async def _load_new_plans(runtime: Runtime) -> None:
    """Add the plans shipped in plans.yaml since the last start (edited ones are left
    alone; the migration loaded the rest). Best effort: a server whose database is away or
    not migrated yet still starts, and says so on /readyz."""
    try:
        async with asyncio.timeout(_PLANS_TIMEOUT_S):
            await load_default_plans(runtime.session_factory)
    except Exception as error:  # start anyway: /readyz reports the database
        log.warning("shipped plans not loaded at start-up (%s: %s)", type(error).__name__, error)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    platform = PlatformMetrics()  # what a scrape works out: queue, breakers, pool, budgets

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings)
        try:
            # Tenant data wrapped by a KEK this process lacks: refuse rather than fail later.
            await runtime.encryption.check_at_start()
        except BaseException:
            await runtime.close()
            raise
        await _load_new_plans(runtime)
        runtime.start()
        await runtime.start_runner()
        app.state.runtime = runtime
        sweeper = RetentionSweeper(
            runtime.session_factory, interval_s=settings.responses.sweep_interval_s
        )
        sweeper.start()
        anchors = AnchorSchedule(runtime.session_factory, settings.audit)
        anchors.start()
        maintainer = LedgerMaintainer(
            runtime.session_factory,
            default_days=settings.usage.ledger_retention_days,
            interval_s=settings.usage.maintain_interval_s,
        )
        maintainer.start()
        heap.settle("start-up")
        try:
            yield
        finally:
            await anchors.close()
            await maintainer.close()
            await sweeper.close()
            await runtime.close()

    app = ApiaryApp(
        title="Apiary",
        version="0.1.0",
        description="Multi-tenant platform for LLM agent swarms behind one model gateway.",
        lifespan=lifespan,
    )
    if settings.trusted_proxies:
        app.trusted_proxies = TrustedProxies(settings.trusted_proxies)
    install_error_handlers(app)
    app.add_middleware(ObservabilityMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware, oidc_issuer=settings.oidc.issuer if settings.oidc else None
    )
    app.include_router(health.router)
    app.include_router(auth.well_known_router)
    app.include_router(api_router())
    for openai_router in OPENAI_ROUTERS:
        app.include_router(openai_router)
    app.include_router(graphql_router(settings))
    openai_api.document_hot_routes(app)
    anthropic_api.document_routes(app)
    openapi.install(app)

    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        response = metrics_response(request, metrics_token)
        if response.status_code != 200:
            return response  # refused before any probe runs
        # The traffic counters, then the platform's state worked out for this scrape.
        state = await platform.exposition(request.app.state.runtime)
        return Response(bytes(response.body) + state, media_type=response.media_type)

    # The dashboard answers the GETs no route answers (see apiary/dashboard.py).
    mount_dashboard(app, settings.web_dist or DEFAULT_DIST)
    return app
