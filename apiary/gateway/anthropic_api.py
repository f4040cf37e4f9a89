"""The Anthropic Messages API under /v1: `POST /v1/messages` and
`POST /v1/messages/count_tokens`, so the Anthropic SDK and tools built on it use Apiary as
their gateway, with any Apiary model or route behind it.

Like the OpenAI hot path (apiary/gateway/openai_api.py), a pure ASGI app that the
application hands these paths to before FastAPI's stack: authenticate (an Apiary key in
`x-api-key`, as Anthropic's clients send it, or `Authorization: Bearer`), authorize, parse
the body once, translate it to a chat call (apiary/gateway/anthropic_messages.py), and
make that call through the gateway client, so routing, fallback, caches, limits, budgets
and the ledger are the chat path's own. `anthropic-version` and `anthropic-beta` headers
are accepted and not needed: the wire format served is the current one. Errors are in
Anthropic's shape (`{"type": "error", "error": {"type": ..., "message": ...}}`), streams
in its event sequence; the `x-apiary-*` headers are the same as on chat.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authenticate, bearer_credentials
from apiary.authz.permissions import Permission
from apiary.errors import ApiaryError, Forbidden, Unauthorized, anthropic_error
from apiary.gateway import anthropic_messages as messages
from apiary.gateway.client import ChatReply, ChatStream, decide
from apiary.gateway.openai_api import (
    _ClientGone,
    _encode,
    _json_body,
    _read_body,
    _send,
    raw_operation,
)
from apiary.kit import tokens
from apiary.observability.metrics import ROUTE_TEMPLATE
from apiary.runtime import Runtime

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
ROUTES = frozenset({MESSAGES, COUNT_TOKENS})
PERMISSION = Permission.GATEWAY_CALL  # what both routes require of the caller

_JSON = (b"content-type", b"application/json")
_READ_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-apiary-cache"})


def _credentials(headers: dict[str, str]) -> str:
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    if "authorization" not in headers:
        # Say what Anthropic's clients send, not only what bearer_credentials asks for.
        raise Unauthorized("send 'x-api-key: <Apiary API key>' or 'Authorization: Bearer <key>'")
    return bearer_credentials(headers["authorization"])


async def _create(
    runtime: Runtime, auth: AuthContext, body: dict[str, Any], headers: dict[str, str], t: float
) -> ChatReply | ChatStream:
    chat = messages.to_chat(body)
    return await runtime.client.chat(
        auth, chat, cache_header=headers.get("x-apiary-cache"), started=t
    )


def _count(runtime: Runtime, body: dict[str, Any]) -> bytes:
    """Input tokens as the router counts them (tiktoken's o200k_base, OpenAI's per-message
    overhead): close for any model, exact for none but OpenAI's."""
    chat = messages.count_input(body)
    decide(runtime.providers, chat)  # an unknown model is a 404 here as on /v1/messages
    counted = tokens.count_messages(chat["messages"])
    if "tools" in chat:
        counted += tokens.count_text(orjson.dumps(chat["tools"]).decode())
    return orjson.dumps({"input_tokens": counted})


class AnthropicHotPath:
    """Pure ASGI app answering `ROUTES` (the caller sends it no other path)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        scope[ROUTE_TEMPLATE] = path
        if scope["method"] != "POST":
            detail = f"{scope['method']} is not allowed here: use POST {path}"
            document = orjson.dumps(anthropic_error(405, detail))
            await _send(send, 405, document, [_JSON, (b"allow", b"POST")])
            return
        started = time.perf_counter()
        runtime: Runtime = scope["app"].state.runtime
        headers = {
            name.decode(): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _READ_HEADERS
        }
        try:
            auth = await self._caller(runtime, scope, headers)
            body = _json_body(await _read_body(receive))
            if path == COUNT_TOKENS:
                await _send(send, 200, _count(runtime, body), [_JSON])
                return
            reply = await _create(runtime, auth, body, headers, started)
        except ApiaryError as error:
            document = orjson.dumps(anthropic_error(error.status_code, error.detail))
            await _send(send, error.status_code, document, [_JSON, *_encode(error.headers)])
            return
        except _ClientGone:
            return
        stops = body.get("stop_sequences") or []
        if isinstance(reply, ChatReply):
            message = messages.from_chat(reply.json(), stops)
            await _send(send, 200, orjson.dumps(message), [_JSON, *_encode(reply.headers)])
        else:
            await _send_events(send, reply, stops)

    @staticmethod
    async def _caller(runtime: Runtime, scope: Scope, headers: dict[str, str]) -> AuthContext:
        client = scope.get("client")
        auth = await authenticate(_credentials(headers), client[0] if client else None, runtime)
        if not auth.can(PERMISSION):
            raise Forbidden(f"role {auth.role.value!r} lacks permission {PERMISSION.value!r}")
        return auth


async def _send_events(send: Send, stream: ChatStream, stops: list[str]) -> None:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        *_encode(stream.headers),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    events = messages.MessageEvents(stops)
    chunks = stream.chunks
    try:
        async for chunk in chunks:
            # One write per provider chunk, however many events it makes.
            frames = b"".join(events.feed(chunk))
            if frames:
                await send({"type": "http.response.body", "body": frames, "more_body": True})
        tail = b"".join(events.finish_events())
        await send({"type": "http.response.body", "body": tail})
    finally:
        # A client that hangs up makes `send` raise: closing the stream now stops the
        # upstream call and writes its ledger entry (as on /v1/chat/completions).
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def document_routes(app: FastAPI) -> None:
    """Add the Messages endpoints to the app's OpenAPI document."""
    build = app.openapi
    summaries = {
        MESSAGES: "Create a message (Anthropic Messages API)",
        COUNT_TOKENS: "Count a message's input tokens (Anthropic Messages API)",
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["x-api-key"] = {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
        }
        for path, summary in summaries.items():
            schema["paths"][path] = raw_operation(
                path, summary, wire="Anthropic", security=["x-api-key", "bearer"]
            )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
