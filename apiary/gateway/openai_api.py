"""The OpenAI-compatible API under /v1: chat completions (streaming or not), embeddings,
and the models a tenant may call. Any OpenAI SDK, LangChain or curl works against it.

`POST /v1/chat/completions` and `POST /v1/embeddings` are the gateway's hot path, so they
are served by `OpenAIHotPath`, a pure ASGI app that the application (`apiary.main.ApiaryApp`)
hands them to before FastAPI's middleware, routing and dependency solving (which cost more
per call than the rest of the gateway put together; see docs/benchmarks.md). It does the
same steps as any endpoint, just directly: authenticate, authorize, parse the body once with
orjson, check only what routing needs, call the in-process gateway client, answer. Errors
use OpenAI's error shape. Responses name the provider, model, route and cost in `x-apiary-*`
headers and break the time down in `Server-Timing`. `GET /v1/models` is an ordinary FastAPI route.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from pydantic import Field
from starlette.types import Receive, Scope, Send

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authenticate, authorize, bearer_credentials
from apiary.authz.permissions import Permission
from apiary.errors import ApiaryError, BadRequest, Forbidden, NotFound, openai_error
from apiary.gateway import completions_api, responses_api
from apiary.gateway.client import ChatReply, ChatStream
from apiary.kit.schemas import Schema
from apiary.observability.metrics import ROUTE_TEMPLATE
from apiary.runtime import Runtime, RuntimeDep

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
Caller = Annotated[AuthContext, authorize(Permission.GATEWAY_CALL)]

MAX_BODY_BYTES = 32 * 1024 * 1024
# How deeply objects and arrays may nest in a /v1 body. orjson decodes 1,024 levels but
# encodes only 254, so a body between the two would parse here and then fail in the cost
# estimate, the cache key or a provider's encoder. Real requests stay far below this: OpenAI
# allows 5 levels of nesting in a structured-output schema, each two levels of JSON.
MAX_JSON_DEPTH = 64
_CONTAINERS = frozenset({dict, list})
_ALL_BUT_OPENERS = bytes(byte for byte in range(256) if byte not in b"{[")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_JSON = (b"content-type", b"application/json")
_READ_HEADERS = frozenset({b"authorization", b"x-apiary-cache"})


class PayloadTooLarge(ApiaryError):
    status_code = 413


class _ClientGone(Exception):
    """The client hung up before its request body arrived."""


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    # A body with fewer opening brackets than the limit cannot nest past it: the common chat
    # call pays one pass in C (deleting every other byte: 0.7 µs for 700 bytes, against 1.2
    # for two `bytes.count`) and is never walked.
    openers = len(raw.translate(None, _ALL_BUT_OPENERS))
    if openers > MAX_JSON_DEPTH and _too_deep(body, MAX_JSON_DEPTH):
        raise BadRequest(
            f"request body nests objects and arrays deeper than the limit of {MAX_JSON_DEPTH} "
            "levels"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: required, a string")
    return body


def _too_deep(document: dict[str, Any], limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels (the body itself is level 1).

    Level by level, visiting containers only: a list holding no container (the strings or
    token ids of an embeddings input) is passed over by one type scan in C."""
    level: list[Any] = [document]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        append = below.append
        for container in level:
            if type(container) is dict:
                members = container.values()
            elif _CONTAINERS.isdisjoint(map(type, container)):
                continue
            else:
                members = container
            for member in members:
                if type(member) is dict or type(member) is list:
                    append(member)
        level = below
        depth += 1
    return False


def _check_chat(body: dict[str, Any]) -> None:
    """The shapes the gateway itself reads (routing, the cost estimate, the cache, the
    adapters' translations); the rest is for the provider to judge."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: required, a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(f"messages.{index}.role: must be system, user, assistant or tool")
        content = message.get("content")
        if (
            content is not None
            and type(content) is not str
            and (type(content) is not list or not all(type(p) is dict for p in content))
        ):
            raise BadRequest(
                f"messages.{index}.content: must be a string or a list of content parts"
            )
        calls = message.get("tool_calls")
        if calls is not None and (
            type(calls) is not list
            or not all(type(c) is dict and type(c.get("function")) is dict for c in calls)
        ):
            raise BadRequest(
                f"messages.{index}.tool_calls: must be a list of objects with a function"
            )
    if len(body) > 2:  # anything beyond model and messages
        _check_options(body)


def _check_options(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest("stream: must be true or false")
    for name in ("stream_options", "response_format"):
        value = body.get(name)
        if value is not None and type(value) is not dict:
            raise BadRequest(f"{name}: must be an object")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= 2**31 - 1):
            raise BadRequest(f"{name}: must be an integer from 1 to {2**31 - 1}")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and type(value) not in (int, float):
            raise BadRequest(f"{name}: must be a number")
    stop = body.get("stop")
    if (
        stop is not None
        and type(stop) is not str
        and (type(stop) is not list or not all(type(s) is str for s in stop))
    ):
        raise BadRequest("stop: must be a string or a list of strings")
    tools = body.get("tools")
    if tools is not None and (
        type(tools) is not list
        or not all(type(t) is dict and type(t.get("function")) is dict for t in tools)
    ):
        raise BadRequest("tools: must be a list of objects with a function")


def _check_embeddings(body: dict[str, Any]) -> None:
    if "input" not in body:
        raise BadRequest("input: required, a string or a list of strings")


@dataclass(frozen=True, slots=True)
class HotRoute:
    """One endpoint served by the hot path: its permission, body check and gateway call."""

    path: str
    summary: str
    permission: Permission
    check: Callable[[dict[str, Any]], None]
    call: Callable[
        [Runtime, AuthContext, dict[str, Any], dict[str, str], float],
        Awaitable[ChatReply | ChatStream],
    ]


async def _chat(
    runtime: Runtime, auth: AuthContext, body: dict[str, Any], headers: dict[str, str], t: float
) -> ChatReply | ChatStream:
    return await runtime.client.chat(
        auth, body, cache_header=headers.get("x-apiary-cache"), started=t
    )


async def _embed(
    runtime: Runtime, auth: AuthContext, body: dict[str, Any], headers: dict[str, str], t: float
) -> ChatReply | ChatStream:
    return await runtime.client.embed(auth, body, started=t)


HOT_ROUTES: dict[str, HotRoute] = {
    route.path: route
    for route in (
        HotRoute(
            "/v1/chat/completions",
            "Create a chat completion (OpenAI-compatible)",
            Permission.GATEWAY_CALL,
            _check_chat,
            _chat,
        ),
        HotRoute(
            "/v1/embeddings",
            "Create embeddings (OpenAI-compatible)",
            Permission.GATEWAY_CALL,
            _check_embeddings,
            _embed,
        ),
        HotRoute(
            "/v1/responses",
            "Create a response (OpenAI Responses API), streaming or not",
            Permission.GATEWAY_CALL,
            responses_api.check,
            responses_api.create,
        ),
        HotRoute(
            "/v1/completions",
            "Create a completion (OpenAI's legacy completions API)",
            Permission.GATEWAY_CALL,
            completions_api.check,
            completions_api.create,
        ),
    )
}


class OpenAIHotPath:
    """Pure ASGI app answering HTTP requests to the `HOT_ROUTES` (the caller sends it no
    other path): `POST` is served, any other method is refused."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = HOT_ROUTES[scope["path"]]
        if scope["method"] != "POST":
            scope[ROUTE_TEMPLATE] = route.path
            detail = f"{scope['method']} is not allowed here: use POST {route.path}"
            document = orjson.dumps(openai_error(405, "MethodNotAllowed", detail))
            await _send(send, 405, document, [_JSON, (b"allow", b"POST")])
            return
        started = time.perf_counter()
        scope[ROUTE_TEMPLATE] = route.path
        runtime: Runtime = scope["app"].state.runtime
        headers = {
            name.decode(): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _READ_HEADERS
        }
        try:
            reply = await self._call(route, runtime, scope, receive, headers, started)
        except ApiaryError as error:
            document = orjson.dumps(openai_error(error.status_code, error.name, error.detail))
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
            await _send(send, error.status_code, document, [_JSON, *extra])
            return
        except _ClientGone:
            return
        if isinstance(reply, ChatReply):
            await _send(send, 200, reply.body, [_JSON, *_encode(reply.headers)])
        else:
            await _send_stream(send, reply)

    async def _call(
        self,
        route: HotRoute,
        runtime: Runtime,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        started: float,
    ) -> ChatReply | ChatStream:
        client = scope.get("client")
        credentials = bearer_credentials(headers.get("authorization", ""))
        auth = await authenticate(credentials, client[0] if client else None, runtime)
        if not auth.can(route.permission):
            raise Forbidden(f"role {auth.role.value!r} lacks permission {route.permission.value!r}")
        body = _json_body(await _read_body(receive))
        route.check(body)
        return await route.call(runtime, auth, body, headers, started)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body is over {MAX_BODY_BYTES // 2**20} MiB")
        parts.append(part)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_stream(send: Send, stream: ChatStream) -> None:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        *_encode(stream.headers),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunks = stream.chunks
    try:
        if stream.framed:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        async for chunk in chunks:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + chunk + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    finally:
        # A client that hangs up makes `send` raise: closing the stream now stops the upstream
        # call and writes its ledger entry, instead of leaving both to the garbage collector.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def raw_operation(path: str, summary: str, *, wire: str, security: list[str]) -> dict[str, Any]:
    """The OpenAPI path item of an endpoint served by raw ASGI (no FastAPI route to describe
    it): a POST of a JSON object, answered in `wire`'s format ("OpenAI", "Anthropic")."""
    return {
        "post": {
            "tags": [f"{wire.lower()}-compatible"],
            "summary": summary,
            "operationId": path.strip("/").replace("/", "_"),
            "security": [{name: []} for name in security],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {"200": {"description": f"{wire}-compatible response"}},
        }
    }


def document_hot_routes(app: FastAPI) -> None:
    """Add the hot path's endpoints to the app's OpenAPI document, where clients and the
    route-walk tests look for them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for route in HOT_ROUTES.values():
            schema["paths"][route.path] = raw_operation(
                route.path, route.summary, wire="OpenAI", security=["bearer"]
            )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class GatewayModel(Schema):
    """A model or route this tenant may call, in OpenAI's shape."""

    id: str = Field(description="The name to send as `model`: provider/model, or a route")
    object: Literal["model"]
    created: int
    owned_by: str = Field(description="The provider, or `apiary-route` for a route")


class ModelList(Schema):
    object: Literal["list"]
    data: list[GatewayModel]


def _model(name: str, created: int) -> dict[str, Any]:
    owner = name.split("/", 1)[0] if "/" in name else "apiary-route"
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


# Encoded here, not by FastAPI: the models document the answer for the spec.
@router.get(
    "/models", summary="The models and routes this tenant may call", response_model=ModelList
)
async def models(auth: Caller, runtime: RuntimeDep) -> Response:
    created = int(time.time())
    data = [_model(name, created) for name in runtime.providers.router.names()]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@router.get(
    "/models/{model_id:path}",
    summary="One model or route this tenant may call",
    response_model=GatewayModel,
)
async def model(model_id: str, auth: Caller, runtime: RuntimeDep) -> Response:
    # The same names as the listing: a model id holds a slash (provider/model), which
    # OpenAI's SDKs send percent-encoded and the server hands over decoded.
    if model_id not in runtime.providers.router.names():
        raise NotFound(f"model {model_id!r} does not exist; GET /v1/models lists what you can call")
    return Response(orjson.dumps(_model(model_id, int(time.time()))), media_type="application/json")
