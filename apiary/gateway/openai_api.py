"""The OpenAI-compatible API under /v1: chat completions (streaming or not), embeddings,
and the models a tenant may call. Any OpenAI SDK, LangChain or curl works against it.

The hot path parses the body once with orjson, checks only what routing needs, and
forwards the rest untouched. Responses name the provider, model, route and cost in
`x-apiary-*` headers and break the time down in `Server-Timing`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authorize
from apiary.authz.permissions import Permission
from apiary.errors import ApiaryError, BadRequest, NotFound
from apiary.gateway import catalog, tokens
from apiary.gateway.cache import CachedResponse, cache_key, wants_cache
from apiary.gateway.providers.base import ProviderError, Usage
from apiary.gateway.router import DEFAULT_OUTPUT_TOKENS, Decision, UnknownModel
from apiary.gateway.semantic_cache import bucket_key
from apiary.gateway.service import AllProvidersFailed, CallResult, Gateway
from apiary.limits.enforcer import Admission
from apiary.runtime import Runtime, RuntimeDep
from apiary.usage.ledger import ledger_row

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


def _started() -> float:
    return time.perf_counter()


Started = Annotated[float, Depends(_started)]
Caller = Annotated[AuthContext, authorize(Permission.GATEWAY_CALL)]


class UpstreamFailed(ApiaryError):
    """Every provider in the chain failed."""

    status_code = 502


class UpstreamRateLimited(UpstreamFailed):
    status_code = 429


class UpstreamRejected(UpstreamFailed):
    """The provider refused the request itself (HTTP 400-class): retrying will not help."""

    status_code = 400


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: required, a string")
    return body


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: required, a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ):
            raise BadRequest(f"messages.{index}.role: must be system, user, assistant or tool")


def _decide(gateway: Gateway, body: dict[str, Any]) -> Decision:
    try:
        return gateway.router.decide(body["model"], body)
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
    gateway: Gateway,
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
    cost = catalog.cost_usd(gateway.price(target), usage) if target else 0.0
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


def _estimate_cost(gateway: Gateway, decision: Decision, body: dict[str, Any]) -> float | None:
    """What the call may cost at the first candidate's price, for the budget reservation."""
    info = gateway.price(decision.chain[0]) if decision.chain else None
    if info is None:
        return None
    expected = Usage(
        prompt_tokens=tokens.count_messages(body.get("messages", [])),
        completion_tokens=int(
            body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_TOKENS
        ),
    )
    return catalog.cost_usd(info, expected)


def _cache_hit(
    hit: CachedResponse,
    auth: AuthContext,
    body: dict[str, Any],
    runtime: Runtime,
    started: float,
    *,
    kind: str,
) -> Response:
    runtime.ledger.record(
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
    return Response(
        hit.body,
        media_type="application/json",
        headers={
            "x-apiary-cache": f"hit; {kind}",
            "x-apiary-provider": hit.provider,
            "x-apiary-model": hit.model,
            "x-apiary-cost-usd": "0",
        },
    )


@router.post("/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    started: Started, request: Request, auth: Caller, runtime: RuntimeDep
) -> Response:
    handler = time.perf_counter()
    gateway, ledger = runtime.gateway, runtime.ledger
    body = await _json_body(request)
    _check_chat(body)
    cacheable = wants_cache(body, request.headers.get("x-apiary-cache"))
    body.pop("cache", None)  # Apiary's switch, not a provider parameter
    key = cache_key(str(auth.scope.tenant_id), body) if cacheable else None
    if key is not None and (hit := await runtime.cache.get(key)) is not None:
        return _cache_hit(hit, auth, body, runtime, started, kind="exact")
    semantic = runtime.semantic_cache if key is not None else None
    if semantic is not None:
        bucket = bucket_key(str(auth.scope.tenant_id), body)
        vector = await semantic.embed(body)
        if (similar := semantic.get(bucket, vector)) is not None:
            return _cache_hit(similar[0], auth, body, runtime, started, kind="semantic")
    decision = _decide(gateway, body)
    admission = await runtime.limits.admit(
        auth, estimate_cost_usd=lambda: _estimate_cost(gateway, decision, body)
    )
    routed = time.perf_counter()
    if body.get("stream"):
        return await _stream(
            gateway, auth, body, decision, runtime, admission, started, routed, handler
        )
    try:
        result = await gateway.complete(body, decision)
    except AllProvidersFailed as error:
        entry, _ = _ledger(
            gateway, auth, body, error.result, kind="chat", latency_s=time.perf_counter() - started
        )
        ledger.record(entry)
        await runtime.limits.settle(admission, tokens=0, cost_usd=0.0)
        raise _failed(error) from None
    entry, cost = _ledger(
        gateway, auth, body, result, kind="chat", latency_s=time.perf_counter() - started
    )
    ledger.record(entry)
    warning = await runtime.limits.settle(
        admission, tokens=entry["prompt_tokens"] + entry["completion_tokens"], cost_usd=cost
    )
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
        await runtime.cache.put(key, cached)
        if semantic is not None:
            semantic.put(bucket, vector, cached)
    headers = _headers(result, cost, started=started, routed=routed, handler=handler)
    if key is not None:
        headers["x-apiary-cache"] = "miss"
    if warning:
        headers["x-apiary-budget-warning"] = warning
    return Response(result.completion.body, media_type="application/json", headers=headers)


async def _stream(
    gateway: Gateway,
    auth: AuthContext,
    body: dict[str, Any],
    decision: Decision,
    runtime: Runtime,
    admission: Admission,
    started: float,
    routed: float,
    handler: float,
) -> Response:
    try:
        result, chunks = await gateway.stream(body, decision)
    except AllProvidersFailed as error:
        entry, _ = _ledger(
            gateway,
            auth,
            body,
            error.result,
            kind="chat",
            latency_s=time.perf_counter() - started,
            streamed=True,
        )
        runtime.ledger.record(entry)
        await runtime.limits.settle(admission, tokens=0, cost_usd=0.0)
        raise _failed(error) from None
    info = gateway.price(result.target) if result.target else None
    headers = _headers(result, None, started=started, routed=routed, handler=handler)
    headers["x-apiary-cost-usd"] = "see ledger" if info else "unpriced"

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + chunk + b"\n\n"
        except ProviderError as error:
            problem = {
                "error": {"message": error.message, "type": "upstream_error", "code": error.kind}
            }
            yield b"data: " + orjson.dumps(problem) + b"\n\n"
        finally:
            entry, cost = _ledger(
                gateway,
                auth,
                body,
                result,
                kind="chat",
                latency_s=time.perf_counter() - started,
                streamed=True,
            )
            runtime.ledger.record(entry)
            await runtime.limits.settle(
                admission,
                tokens=entry["prompt_tokens"] + entry["completion_tokens"],
                cost_usd=cost,
            )
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


@router.post("/embeddings", summary="Create embeddings (OpenAI-compatible)")
async def embeddings(
    started: Started, request: Request, auth: Caller, runtime: RuntimeDep
) -> Response:
    handler = time.perf_counter()
    body = await _json_body(request)
    if "input" not in body:
        raise BadRequest("input: required, a string or a list of strings")
    decision = _decide(runtime.gateway, body)
    routed = time.perf_counter()
    try:
        result = await runtime.gateway.embed(body, decision)
    except AllProvidersFailed as error:
        raise _failed(error) from None
    entry, cost = _ledger(
        runtime.gateway,
        auth,
        body,
        result,
        kind="embedding",
        latency_s=time.perf_counter() - started,
    )
    runtime.ledger.record(entry)
    assert result.completion is not None
    return Response(
        result.completion.body,
        media_type="application/json",
        headers=_headers(result, cost, started=started, routed=routed, handler=handler),
    )


@router.get("/models", summary="The models and routes this tenant may call")
async def models(auth: Caller, runtime: RuntimeDep) -> Response:
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": owner}
        for name in runtime.gateway.router.names()
        for owner in [name.split("/", 1)[0] if "/" in name else "apiary-route"]
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
