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
from apiary.errors import BadRequest
from apiary.gateway.client import ChatReply
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


async def _started() -> float:  # async: no worker-thread hop per request
    return time.perf_counter()


Started = Annotated[float, Depends(_started)]
Caller = Annotated[AuthContext, authorize(Permission.GATEWAY_CALL)]


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


@router.post("/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    started: Started, request: Request, auth: Caller, runtime: RuntimeDep
) -> Response:
    body = await _json_body(request)
    _check_chat(body)
    reply = await runtime.client.chat(
        auth, body, cache_header=request.headers.get("x-apiary-cache"), started=started
    )
    if isinstance(reply, ChatReply):
        return Response(reply.body, media_type="application/json", headers=reply.headers)

    async def frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield b"data: " + chunk + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        frames(reply.chunks), media_type="text/event-stream", headers=reply.headers
    )


@router.post("/embeddings", summary="Create embeddings (OpenAI-compatible)")
async def embeddings(
    started: Started, request: Request, auth: Caller, runtime: RuntimeDep
) -> Response:
    body = await _json_body(request)
    if "input" not in body:
        raise BadRequest("input: required, a string or a list of strings")
    reply = await runtime.client.embed(auth, body, started=started)
    return Response(reply.body, media_type="application/json", headers=reply.headers)


@router.get("/models", summary="The models and routes this tenant may call")
async def models(auth: Caller, runtime: RuntimeDep) -> Response:
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": owner}
        for name in runtime.gateway.router.names()
        for owner in [name.split("/", 1)[0] if "/" in name else "apiary-route"]
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
