"""Per-request observability: request ids, Prometheus metrics and the access log.

`ObservabilityMiddleware` is a pure ASGI middleware (no `BaseHTTPMiddleware`, which buffers and
breaks streaming). For every HTTP request it picks a request id, exposes it through
`request_context` and `request.state.request_id`, echoes it in `x-request-id`, and when the
response is done records `apiary_http_requests_total` / `apiary_http_request_duration_seconds`
labelled by route template (never the raw path, whose cardinality is unbounded) and writes one
access line on the `apiary.access` logger. Metrics live in a private `REGISTRY` so several apps
or tests in one process do not collide with the global default registry.
"""

from __future__ import annotations

import hmac
import logging
import operator
import os
import re
import time
from contextvars import Token
from typing import Final, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiary.observability import tracing
from apiary.observability.logging import RequestContext, log_info, request_context

__all__ = [
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "REGISTRY",
    "REQUEST_ID_HEADER",
    "ROUTE_TEMPLATE",
    "UNMATCHED_ROUTE",
    "ObservabilityMiddleware",
    "metrics_response",
]

REGISTRY: Final = CollectorRegistry()

HTTP_REQUESTS: Final = Counter(
    "apiary_http_requests_total",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)

HTTP_LATENCY: Final = Histogram(
    "apiary_http_request_duration_seconds",
    "Time from receiving an HTTP request to finishing its response, by route template.",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# Model calls, by what served them. Providers and models are bounded by the gateway config.
GATEWAY_CALLS: Final = Counter(
    "apiary_gateway_calls_total",
    "Model calls through the gateway, by provider, model, status and whether the cache answered.",
    ["provider", "model", "status", "cache"],
    registry=REGISTRY,
)
GATEWAY_TOKENS: Final = Counter(
    "apiary_gateway_tokens_total",
    "Tokens through the gateway, by provider, model and direction (prompt or completion).",
    ["provider", "model", "direction"],
    registry=REGISTRY,
)
GATEWAY_COST: Final = Counter(
    "apiary_gateway_cost_usd_total",
    "What gateway calls cost, in USD (priced calls only).",
    ["provider", "model"],
    registry=REGISTRY,
)
GATEWAY_UNPRICED: Final = Counter(
    "apiary_gateway_unpriced_calls_total",
    "Calls to models with no known price: their cost is unknown, not zero.",
    ["provider", "model"],
    registry=REGISTRY,
)
GATEWAY_CACHE_SAVED: Final = Counter(
    "apiary_gateway_cache_saved_usd_total",
    "What cache hits would have cost, in USD.",
    registry=REGISTRY,
)

# Seconds from sending a call upstream to its last byte (retries included, queueing not),
# and to a stream's first token; by provider and model, bounded by the gateway config.
_UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
GATEWAY_UPSTREAM_LATENCY: Final = Histogram(
    "apiary_gateway_upstream_duration_seconds",
    "Time providers took to answer gateway calls (retries included), by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
    buckets=_UPSTREAM_BUCKETS,
)
GATEWAY_TTFT: Final = Histogram(
    "apiary_gateway_time_to_first_token_seconds",
    "Time from sending a streamed call to its first token, by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)

# Calls refused by the tenant's limits (apiary/limits/enforcer.py), by which limit.
LIMIT_KINDS: Final = ("tenant_rpm", "key_rpm", "tenant_tpm", "key_tpm", "budget")
LIMIT_REFUSALS: Final = Counter(
    "apiary_limit_refusals_total",
    "Gateway calls refused by a tenant's limits: 429 (rate) or 402 (budget), by limit kind.",
    ["kind"],
    registry=REGISTRY,
)
# Every kind exported from the start: an alert on a rate needs the series to exist at 0.
LIMIT_REFUSED: Final = {kind: LIMIT_REFUSALS.labels(kind) for kind in LIMIT_KINDS}

LEDGER_WRITE_FAILURES: Final = Counter(
    "apiary_ledger_write_failures_total",
    "Ledger batches (or single entries) the database did not take; they are retried.",
    registry=REGISTRY,
)
LEDGER_DROPPED: Final = Counter(
    "apiary_ledger_entries_dropped_total",
    "Ledger entries lost: refused by the database, or pushed out of a full queue.",
    registry=REGISTRY,
)

EXECUTIONS_REQUEUED: Final = Counter(
    "apiary_executions_requeued_total",
    "Unfinished executions published to the workers again: no message in the broker named "
    "them (lost with Redis).",
    registry=REGISTRY,
)


def observe_upstream(provider: str, model: str, upstream_s: float, ttft_s: float | None) -> None:
    """One finished upstream call's latency (and a stream's time to first token)."""
    labelled(GATEWAY_UPSTREAM_LATENCY, provider, model).observe(upstream_s)
    if ttft_s is not None:
        labelled(GATEWAY_TTFT, provider, model).observe(ttft_s)


_Metric = TypeVar("_Metric", Counter, Histogram)
_CHILDREN: dict[tuple[object, tuple[str, ...]], object] = {}


def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)`, remembered: prometheus_client validates and joins the label
    values on every `labels()` call, which the gateway's hot path makes several times per
    request. Every label set here is bounded (route templates, configured providers)."""
    key = (metric, values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child  # type: ignore[return-value]  # a child has its parent's type


REQUEST_ID_HEADER: Final = "x-request-id"
# Scope key an ASGI handler outside the router sets to name its route template.
ROUTE_TEMPLATE: Final = "apiary.route_template"
UNMATCHED_ROUTE: Final = "unmatched"

_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Clients can send any method token; folding the odd ones keeps the label set bounded.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Scraped and probed every few seconds: counted, but kept out of the access log.
_QUIET_ROUTES = frozenset({"/healthz", "/metrics"})
_HEADER_NAME = operator.itemgetter(0)  # of an ASGI header pair: (name, value)

access_log = logging.getLogger("apiary.access")


def _callers_request_id(scope: Scope) -> str | None:
    """The caller's `X-Request-ID`, if it has a sane shape (None: the request gets one of
    ours)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            # An id we echo into logs and headers must not carry spaces, newlines or bulk.
            if _REQUEST_ID_SHAPE.fullmatch(candidate):
                return candidate
            break
    return None


def _route_template(scope: Scope, *, entry_root_path: str) -> str:
    """The matched route's path template, including router prefixes and mount points."""
    # Mounts rewrite root_path as they match; the growth since we saw the request is the
    # mount prefix, which the inner route's own template does not include.
    if (named := scope.get(ROUTE_TEMPLATE)) is not None:
        return str(named)
    mount_prefix = str(scope.get("root_path", ""))[len(entry_root_path) :]
    route = scope.get("route")
    if route is None or isinstance(route, Mount):
        # Either nothing matched, or a mounted app without routes of its own (static files)
        # or with none that matched took the request.
        return f"{mount_prefix}/{{path}}" if mount_prefix else UNMATCHED_ROUTE
    template = getattr(route, "path_format", None)
    # FastAPI 0.165 no longer copies routes on include_router: scope["route"] is the original
    # APIRoute without the router prefixes. The prefixed template is only kept on FastAPI's
    # per-request routing context, which we read defensively since it is not public API.
    fastapi_scope = scope.get("fastapi")
    effective = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    if effective is not None and getattr(effective, "original_route", None) is route:
        template = getattr(effective, "path_format", None) or template
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    return mount_prefix + template


class ObservabilityMiddleware:
    """Pure ASGI middleware adding request ids, metrics and an access log to HTTP requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        callers = _callers_request_id(scope)
        # Ours: 128 random bits in hex, as random as uuid4().hex without building a UUID,
        # and the shape of a W3C trace id, which tracing takes it for (`start_server_span`).
        request_id = callers or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        context = RequestContext(request_id=request_id)
        token = request_context.set(context)
        entry_root_path = str(scope.get("root_path", ""))
        started = time.perf_counter()
        status = 500
        error: str | None = None
        tracer = tracing.TRACER
        server_span: tracing.Started
        if tracer is not None:
            drops_from = tracing.DROPS_FROM
            if (
                callers is None
                and drops_from is not None
                and request_id[16:] >= drops_from
                and b"traceparent" not in map(_HEADER_NAME, scope["headers"])
            ):
                # Sampled out (nine requests in ten at a 10% ratio), decided here as
                # `start_server_span` decides it, but without a Python call: every call
                # on a path each request takes costs the server several times what it
                # costs in a loop (docs/benchmarks.md, issue 17).
                server_span = tracing.note_dropped(request_id)
            else:
                server_span = tracing.start_server_span(
                    tracer,
                    scope["method"],
                    scope["path"],
                    scope["headers"],
                    random_id=None if callers else request_id,
                )

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            # Even if a streaming response already sent its 200 header, the request failed.
            status = 500
            error = type(exc).__name__
            raise
        finally:
            duration = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            route = _route_template(scope, entry_root_path=entry_root_path)
            labelled(HTTP_REQUESTS, method, route, str(status)).inc()
            labelled(HTTP_LATENCY, method, route).observe(duration)
            if route not in _QUIET_ROUTES:
                duration_ms = round(duration * 1000, 2)
                log_info(
                    access_log,
                    f"{scope['method']} {scope['path']} {status} {duration_ms:.2f}ms",
                    # The query string is left out: it is where clients put tokens.
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": duration_ms,
                        **({"error": error} if error else {}),
                    },
                )
            if tracer is not None:  # after the access line, which carries its trace id
                if isinstance(server_span, Token):  # dropped: only its trace id was noted
                    server_span.var.reset(server_span)
                else:
                    tracing.end_server_span(
                        server_span, method=method, route=route, status=status, error=error
                    )
            request_context.reset(token)


_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_RELAY_HEADERS: Final = ("x-forwarded-for", "forwarded", "x-real-ip")


def scrape_refusal(
    *, token: str | None, authorization: str | None, peer: str | None, relayed: bool
) -> tuple[int, str] | None:
    """Why a `GET /metrics` may not read the platform's figures (its cost and call counts
    span every tenant), as (status, detail), or None when it may.

    With `APIARY_METRICS_TOKEN` set, the scraper sends it as a bearer token. Without one,
    only a direct connection from this machine scrapes: a loopback peer whose request no
    proxy relayed (a proxy on the same machine would make every visitor a loopback peer)."""
    if token is not None:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return None
        return 401, "GET /metrics needs the bearer token APIARY_METRICS_TOKEN"
    if peer in _LOOPBACK and not relayed:
        return None
    return 403, "GET /metrics answers other hosts only when APIARY_METRICS_TOKEN is set"


def metrics_response(request: Request, token: str | None) -> Response:
    """Prometheus text exposition of `REGISTRY`, for the `GET /metrics` endpoint."""
    refusal = scrape_refusal(
        token=token,
        authorization=request.headers.get("authorization"),
        peer=request.client.host if request.client else None,
        relayed=any(name in request.headers for name in _RELAY_HEADERS),
    )
    if refusal is not None:
        status, detail = refusal
        error = "Unauthorized" if status == 401 else "Forbidden"
        return JSONResponse({"error": error, "detail": detail}, status_code=status)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
