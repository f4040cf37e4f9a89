"""The gateway's call flow, shared by the /v1 API and by callers inside Apiary (the swarm,
knowledge bases), which use it in-process with no HTTP hop.

One chat call: the exact cache, then the semantic cache; the tenant's limits (rates and a
budget reservation); routing; the provider chain (retries, breakers, fallback); the
reservation settled with the real cost; one ledger row; the answer cached. Every call,
whoever makes it, is accounted the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from apiary.auth.context import AuthContext
from apiary.errors import ApiaryError, NotFound
from apiary.gateway import catalog
from apiary.gateway.cache import CachedResponse, ResponseCache, bucket_key, cache_key, wants_cache
from apiary.gateway.chain import AllProvidersFailed, CallResult, ProviderChain
from apiary.gateway.providers.base import ProviderError, Usage
from apiary.gateway.router import DEFAULT_OUTPUT_TOKENS, Decision, UnknownModel
from apiary.kit import tokens
from apiary.limits.enforcer import Admission, LimitEnforcer
from apiary.observability import tracing
from apiary.observability.metrics import observe_upstream
from apiary.usage.ledger import LedgerWriter, ledger_row

if TYPE_CHECKING:
    from apiary.gateway.semantic_cache import SemanticCache  # numpy and the embedder


@dataclass
class ChatReply:
    """A finished call: the OpenAI `chat.completion` document and the x-apiary headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(self.body)
        return document


@dataclass
class ChatStream:
    """An open stream: headers known now, chunks (OpenAI chunk JSON, no SSE framing) to come.

    `framed`: the chunks are whole SSE events already (the Responses API's typed events),
    sent as they are, with no closing `[DONE]`."""

    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    framed: bool = False


class UpstreamFailed(ApiaryError):
    """Every provider in the chain failed."""

    status_code = 502


class UpstreamRateLimited(UpstreamFailed):
    status_code = 429


class UpstreamRejected(UpstreamFailed):
    """The provider refused the request itself (HTTP 400-class): retrying will not help."""

    status_code = 400


def decide(providers: ProviderChain, body: dict[str, Any]) -> Decision:
    try:
        return providers.router.decide(body["model"], body)
    except UnknownModel:
        raise NotFound(
            f"model {body['model']!r} does not exist; GET /v1/models lists what you can call"
        ) from None


def _failed(error: AllProvidersFailed) -> UpstreamFailed:
    last = error.result.error
    tried = "; ".join(error.result.fallback_path) or "no provider available"
    if last is not None and last.kind == "client":
        return UpstreamRejected(
            f"{last.provider or 'provider'} refused the request: {last.message}"
        )
    if last is not None and last.kind == "rate_limit":
        wait = int(last.retry_after_s or 0) + 1
        return UpstreamRateLimited(
            f"every provider is rate limited ({tried})", headers={"Retry-After": str(wait)}
        )
    return UpstreamFailed(f"every provider failed ({tried})")


def _ledger(
    providers: ProviderChain,
    auth: AuthContext,
    body: dict[str, Any],
    result: CallResult,
    *,
    kind: str,
    latency_s: float,
    streamed: bool = False,
) -> tuple[dict[str, Any], float | None]:
    usage, estimated = result.usage, False
    if usage is None and result.target is not None and kind == "chat":
        # No usage from upstream (a dropped stream): count the prompt ourselves.
        usage = Usage(prompt_tokens=tokens.count_messages(body.get("messages", [])))
        estimated = True
    usage = usage or Usage()
    target = result.target
    if target is not None:
        observe_upstream(target.provider, target.model, result.upstream_s, result.ttft_s)
    cost = catalog.cost_usd(providers.price(target), usage) if target else 0.0
    failed = result.error if (target is None or result.error is not None) else None
    row = ledger_row(
        auth,
        body,
        kind=kind,
        route=result.decision.route,
        reason=result.decision.reason,
        provider=target.provider if target else None,
        model=target.model if target else None,
        usage=usage,
        cost_usd=cost,
        latency_s=latency_s,
        ttft_s=result.ttft_s,
        fallback_path=result.fallback_path,
        error=(failed.message if failed else "no provider available")
        if target is None or result.error is not None
        else None,
        streamed=streamed,
        tokens_estimated=estimated,
    )
    return row, cost


def _headers(
    result: CallResult, cost: float | None, *, started: float, routed: float, handler: float
) -> dict[str, str]:
    assert result.target is not None
    timing = (
        f"auth;dur={(handler - started) * 1000:.2f}, "
        f"route;dur={(routed - handler) * 1000:.2f}, "
        f"queue;dur={result.queue_s * 1000:.2f}, "
        f"upstream;dur={result.upstream_s * 1000:.2f}"
    )
    return {
        "x-apiary-provider": result.target.provider,
        "x-apiary-model": result.target.model,
        "x-apiary-route": result.decision.route or "",
        "x-apiary-cost-usd": "unpriced" if cost is None else f"{cost:.8f}",
        "server-timing": timing,
    }


# Where each kind of call carries its prompt; only chat pays for output tokens.
_PROMPT_FIELD = {"chat": "messages", "embedding": "input"}


def _estimate_cost(
    providers: ProviderChain, decision: Decision, body: dict[str, Any], *, kind: str
) -> float | None:
    """What the call may cost at the first candidate's price, for the budget reservation.

    Prompt tokens are estimated as characters / 4 (close for English, generous for code):
    a tokenizer here would cost a millisecond on the hot path and 70 MiB of memory, and the
    reservation is replaced by the real cost when the call ends anyway."""
    info = providers.price(decision.chain[0]) if decision.chain else None
    if info is None:
        return None
    characters = len(orjson.dumps(body.get(_PROMPT_FIELD.get(kind, "messages"))))
    completion = 0
    if kind == "chat":
        completion = int(
            body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_TOKENS
        )
    expected = Usage(prompt_tokens=characters // 4 + 1, completion_tokens=completion)
    return catalog.cost_usd(info, expected)


@dataclass(slots=True)
class BilledCall:
    """One billable call from admission to settlement.

    Every call that reaches a provider (chat, streamed or not, embeddings, and any endpoint
    added later) is admitted and settled here, so none can skip the tenant's budget, its
    rate limits or the ledger: admit before the provider is called (rates, a reservation
    of the estimated cost), then one ledger row and the reservation replaced by the real
    cost and tokens, whether the call succeeded or failed."""

    client: GatewayClient
    auth: AuthContext
    body: dict[str, Any]
    kind: str
    started: float
    admission: Admission
    span: tracing.Span | None = None  # the gateway call's, with tracing on

    @classmethod
    async def admit(
        cls,
        client: GatewayClient,
        auth: AuthContext,
        body: dict[str, Any],
        decision: Decision,
        *,
        kind: str,
        started: float,
    ) -> BilledCall:
        providers = client.providers
        admission = await client.limits.admit(
            auth, estimate_cost_usd=lambda: _estimate_cost(providers, decision, body, kind=kind)
        )
        if tracing.TRACER is None or tracing.dropped():
            return cls(client, auth, body, kind, started, admission)
        return cls(client, auth, body, kind, started, admission, tracing.current_span())

    async def settle(
        self, result: CallResult, *, streamed: bool = False
    ) -> tuple[dict[str, Any], float | None, str | None]:
        """Record the call and settle its reservation: its ledger row, its cost and the
        budget warning, if any."""
        entry, cost = _ledger(
            self.client.providers,
            self.auth,
            self.body,
            result,
            kind=self.kind,
            latency_s=time.perf_counter() - self.started,
            streamed=streamed,
        )
        self.client.ledger.record(entry)
        if self.span is not None:
            _describe_call(self.span, self.client.providers, result, entry, cost)
        warning = await self.client.limits.settle(
            self.admission,
            tokens=entry["prompt_tokens"] + entry["completion_tokens"],
            cost_usd=cost,
        )
        return entry, cost, warning

    async def failed(self, error: AllProvidersFailed, *, streamed: bool = False) -> UpstreamFailed:
        """Account a call no provider served (no cost, the reservation released); returns
        the error for the caller."""
        await self.settle(error.result, streamed=streamed)
        return _failed(error)


def _describe_call(
    span: tracing.Span,
    providers: ProviderChain,
    result: CallResult,
    entry: dict[str, Any],
    cost: float | None,
) -> None:
    """The GenAI attributes of the gateway call's span."""
    target = result.target
    described: dict[str, tracing.AttributeValue] = {
        "gen_ai.usage.input_tokens": entry["prompt_tokens"],
        "gen_ai.usage.output_tokens": entry["completion_tokens"],
        "apiary.attempts": result.attempts,
        # The provider's share of the call's time (its retries included): with no attempt
        # spans under a call answered at once, the split between it and Apiary's own time.
        "apiary.upstream_s": result.upstream_s,
    }
    if result.ttft_s is not None:
        described["apiary.ttft_s"] = result.ttft_s
    if result.queue_s:
        described["apiary.queue_s"] = result.queue_s
    if target is not None:
        described["gen_ai.system"] = providers.handles[target.provider].provider.config.kind
        described["apiary.provider"] = target.provider
        described["gen_ai.response.model"] = (
            result.completion.model if result.completion is not None else target.model
        )
    if cost is not None:
        described["apiary.cost_usd"] = cost
    if result.decision.route:
        described["apiary.route"] = result.decision.route
    span.set_attributes(described)  # one call, one lock: not one per attribute
    if result.error is not None:
        tracing.record_error(span, result.error.kind)


def _cache_hit(
    hit: CachedResponse,
    auth: AuthContext,
    body: dict[str, Any],
    ledger: LedgerWriter,
    started: float,
    *,
    kind: str,
) -> ChatReply:
    ledger.record(
        ledger_row(
            auth,
            body,
            kind="chat",
            route=None,
            reason=f"{kind} cache hit",
            provider=hit.provider,
            model=hit.model,
            usage=Usage(prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens),
            cost_usd=0.0,
            cache_hit=True,
            saved_usd=hit.cost_usd or 0.0,
            latency_s=time.perf_counter() - started,
        )
    )
    if tracing.TRACER is not None:
        span = tracing.current_span()
        span.set_attribute("apiary.cache", f"hit {kind}")
        span.set_attribute("gen_ai.response.model", hit.model)
        span.set_attribute("apiary.provider", hit.provider)
        span.set_attribute("apiary.cost_usd", 0.0)
    return ChatReply(
        hit.body,
        headers={
            "x-apiary-cache": f"hit; {kind}",
            "x-apiary-provider": hit.provider,
            "x-apiary-model": hit.model,
            "x-apiary-cost-usd": "0",
        },
    )


async def _stream(
    providers: ProviderChain,
    body: dict[str, Any],
    decision: Decision,
    call: BilledCall,
    started: float,
    routed: float,
    handler: float,
) -> ChatStream:
    try:
        result, chunks = await providers.stream(body, decision)
    except AllProvidersFailed as error:
        raise await call.failed(error, streamed=True) from None
    info = providers.price(result.target) if result.target else None
    headers = _headers(result, None, started=started, routed=routed, handler=handler)
    headers["x-apiary-cost-usd"] = "see ledger" if info else "unpriced"

    async def accounted() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except ProviderError as error:
            problem = {
                "error": {"message": error.message, "type": "upstream_error", "code": error.kind}
            }
            yield orjson.dumps(problem)
        finally:
            await call.settle(result, streamed=True)

    return ChatStream(headers=headers, chunks=accounted())


async def _ending(chunks: AsyncIterator[bytes], span: tracing.Span) -> AsyncIterator[bytes]:
    """The stream's chunks; the gateway call's span ends when the stream has settled. (Not
    made current across the yields: a context attached in one step of an async generator
    is detached in another context.)"""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        span.set_attribute("apiary.streamed", True)
        span.end()


class GatewayClient:
    """The gateway's call flow, and the in-process entry point: `await client.chat(auth,
    body)`. Built once per process by the composition root (`apiary.runtime`) from the
    parts a call goes through."""

    def __init__(
        self,
        providers: ProviderChain,
        *,
        cache: ResponseCache,
        semantic_cache: SemanticCache | None,
        limits: LimitEnforcer,
        ledger: LedgerWriter,
    ) -> None:
        self.providers = providers  # routing and the provider chain (retries, fallback)
        self.cache = cache
        self.semantic_cache = semantic_cache
        self.limits = limits
        self.ledger = ledger

    async def chat(
        self,
        auth: AuthContext,
        body: dict[str, Any],
        *,
        cache_header: str | None = None,
        started: float | None = None,
    ) -> ChatReply | ChatStream:
        """One chat completion; a `ChatStream` when `body["stream"]` is set."""
        if tracing.TRACER is None or tracing.dropped():
            return await self._chat(auth, body, cache_header, started)
        scope = tracing.child(
            f"chat {body.get('model')}",
            kind=tracing.SpanKind.CLIENT,  # the GenAI client span: a call to a model
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": str(body.get("model")),
                "apiary.tenant_id": str(auth.scope.tenant_id),
            },
            end=False,  # a stream's lasts as long as the stream
        )
        try:
            with scope as span:  # an exception is recorded on it as it leaves the block
                reply = await self._chat(auth, body, cache_header, started)
        except BaseException:
            span.end()
            raise
        if isinstance(reply, ChatStream):  # the span lasts as long as the stream
            reply.chunks = _ending(reply.chunks, span)
            return reply
        span.set_attribute("apiary.cache", reply.headers.get("x-apiary-cache", "off"))
        span.end()
        return reply

    async def _chat(
        self,
        auth: AuthContext,
        body: dict[str, Any],
        cache_header: str | None,
        started: float | None,
    ) -> ChatReply | ChatStream:
        started = time.perf_counter() if started is None else started
        handler = time.perf_counter()
        providers = self.providers
        cacheable = wants_cache(body, cache_header)
        body.pop("cache", None)  # Apiary's switch, not a provider parameter
        key = cache_key(str(auth.scope.tenant_id), body) if cacheable else None
        if key is not None and (hit := await self.cache.get(key)) is not None:
            return _cache_hit(hit, auth, body, self.ledger, started, kind="exact")
        semantic = self.semantic_cache if key is not None else None
        if semantic is not None and not await self.limits.has_feature(
            auth.scope.tenant_id, "semantic_cache"
        ):
            semantic = None  # not in the tenant's plan (apiary/billing)
        if semantic is not None:
            bucket = bucket_key(str(auth.scope.tenant_id), body)
            vector = await semantic.embed(body)
            if (similar := semantic.get(bucket, vector)) is not None:
                return _cache_hit(similar[0], auth, body, self.ledger, started, kind="semantic")
        decision = decide(providers, body)
        call = await BilledCall.admit(self, auth, body, decision, kind="chat", started=started)
        routed = time.perf_counter()
        if body.get("stream"):
            return await _stream(providers, body, decision, call, started, routed, handler)
        try:
            result = await providers.complete(body, decision)
        except AllProvidersFailed as error:
            raise await call.failed(error) from None
        entry, cost, warning = await call.settle(result)
        assert result.completion is not None
        assert result.target is not None
        if key is not None:
            cached = CachedResponse(
                body=result.completion.body,
                provider=result.target.provider,
                model=result.target.model,
                prompt_tokens=entry["prompt_tokens"],
                completion_tokens=entry["completion_tokens"],
                cost_usd=cost,
            )
            await self.cache.put(key, cached)
            if semantic is not None:
                semantic.put(bucket, vector, cached)
        headers = _headers(result, cost, started=started, routed=routed, handler=handler)
        if key is not None:
            headers["x-apiary-cache"] = "miss"
        if warning:
            headers["x-apiary-budget-warning"] = warning
        return ChatReply(result.completion.body, headers=headers)

    async def embed(
        self, auth: AuthContext, body: dict[str, Any], *, started: float | None = None
    ) -> ChatReply:
        """Embeddings through the routed chain, accounted like chat calls."""
        if tracing.TRACER is None or tracing.dropped():
            return await self._embed(auth, body, started)
        with tracing.child(
            f"embeddings {body.get('model')}",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": str(body.get("model")),
                "apiary.tenant_id": str(auth.scope.tenant_id),
            },
        ):
            return await self._embed(auth, body, started)

    async def _embed(
        self, auth: AuthContext, body: dict[str, Any], started: float | None
    ) -> ChatReply:
        started = time.perf_counter() if started is None else started
        handler = time.perf_counter()
        decision = decide(self.providers, body)
        call = await BilledCall.admit(self, auth, body, decision, kind="embedding", started=started)
        routed = time.perf_counter()
        try:
            result = await self.providers.embed(body, decision)
        except AllProvidersFailed as error:
            raise await call.failed(error) from None
        _, cost, warning = await call.settle(result)
        assert result.completion is not None
        headers = _headers(result, cost, started=started, routed=routed, handler=handler)
        if warning:
            headers["x-apiary-budget-warning"] = warning
        return ChatReply(result.completion.body, headers=headers)
