"""The OpenAI-compatible API under /v1: chat completions (streaming or not), embeddings,
and the models a tenant may call. Any OpenAI SDK, LangChain or curl works against it.

The hot path parses the body once with orjson, checks only what routing needs, and
forwards the rest untouched. Responses name the provider, model, route and cost in
`x-apiary-*` headers and break the time down in `Server-Timing`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authorize
from apiary.authz.permissions import Permission
from apiary.db import utcnow
from apiary.errors import ApiaryError, BadRequest, NotFound
from apiary.gateway import catalog, tokens
from apiary.gateway.providers.base import ProviderError, Usage
from apiary.gateway.router import Decision, UnknownModel
from apiary.gateway.service import AllProvidersFailed, CallResult, Gateway
from apiary.runtime import RuntimeDep

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
        usage, estimated = (
            Usage(prompt_tokens=tokens.count_messages(body.get("messages", []))),
            True,
        )
    usage = usage or Usage()
    info = gateway.price(result.target) if result.target else None
    cost = catalog.cost_usd(info, usage) if result.target else 0.0
    entry = {
        "id": uuid.uuid4(),
        "created_at": utcnow(),
        "tenant_id": auth.scope.tenant_id,
        "api_key_id": auth.actor.api_key_id,
        "user_id": auth.actor.user_id,
        "execution_id": None,
        "agent_id": None,
        "kind": kind,
        "requested_model": str(body.get("model"))[:200],
        "route": result.decision.route,
        "reason": result.decision.reason[:200],
        "provider": result.target.provider if result.target else None,
        "model": result.target.model if result.target else None,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "tokens_estimated": estimated,
        "cost_usd": cost,
        "priced": cost is not None,
        "cache_hit": False,
        "saved_usd": 0.0,
        "latency_ms": latency_s * 1000,
        "ttft_ms": result.ttft_s * 1000 if result.ttft_s is not None else None,
        "fallback_path": result.fallback_path,
        "status": "ok" if result.target and result.error is None else "error",
        "error": result.error.message[:500] if result.error else None,
        "streamed": streamed,
    }
    return entry, cost


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


@router.post("/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    started: Started, request: Request, auth: Caller, runtime: RuntimeDep
) -> Response:
    handler = time.perf_counter()
    gateway, ledger = runtime.gateway, runtime.ledger
    body = await _json_body(request)
    _check_chat(body)
    decision = _decide(gateway, body)
    routed = time.perf_counter()
    if body.get("stream"):
        return await _stream(gateway, auth, body, decision, runtime, started, routed, handler)
    try:
        result = await gateway.complete(body, decision)
    except AllProvidersFailed as error:
        entry, _ = _ledger(
            gateway, auth, body, error.result, kind="chat", latency_s=time.perf_counter() - started
        )
        ledger.record(entry)
        raise _failed(error) from None
    entry, cost = _ledger(
        gateway, auth, body, result, kind="chat", latency_s=time.perf_counter() - started
    )
    ledger.record(entry)
    assert result.completion is not None
    return Response(
        result.completion.body,
        media_type="application/json",
        headers=_headers(result, cost, started=started, routed=routed, handler=handler),
    )


async def _stream(
    gateway: Gateway,
    auth: AuthContext,
    body: dict[str, Any],
    decision: Decision,
    runtime: Any,
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
            entry, _ = _ledger(
                gateway,
                auth,
                body,
                result,
                kind="chat",
                latency_s=time.perf_counter() - started,
                streamed=True,
            )
            runtime.ledger.record(entry)
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
