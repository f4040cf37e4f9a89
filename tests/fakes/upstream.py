"""A fake LLM provider on 127.0.0.1 speaking the real wire protocols, for gateway tests.

`FakeUpstream` is an aiohttp server started inside the test's event loop. It serves the
OpenAI Chat Completions, Embeddings and Models endpoints (also what Together and Moonshot
speak), Azure OpenAI's deployment routes, and Anthropic's Messages API, streaming and not,
with each provider's own auth headers and error bodies. Tests script what comes next per
family (`"openai"`, `"azure"`, `"anthropic"`) with `Reply`, `Fail`, `Slow`, `Drop` and
`StreamThenDrop`; with nothing scripted the reply is `"echo: <last user message>"`. Every
request is kept in `requests`. The default path is cheap (orjson, no logging) because the
throughput benchmark uses this server as its upstream too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
import re
import struct
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeAlias

import orjson
import pytest
from aiohttp import web

Family = Literal["openai", "azure", "anthropic"]
Endpoint = Literal["chat", "embeddings"]
Json: TypeAlias = dict[str, Any]  # a decoded wire payload; its shape is the provider's

DEFAULT_API_KEY = "sk-fake-upstream"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-opus-4-6", "claude-haiku-4-5")
ECHO_PREFIX = "echo: "

# -- behaviours -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model makes; `arguments_json` is sent as the model would."""

    name: str
    arguments_json: str = "{}"
    id: str | None = None  # generated in the provider's format when None


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer.

    `text=None` echoes the last user message unless `tool_calls` are given. `usage` is
    `(prompt_tokens, completion_tokens)`; None counts words. `finish_reason` takes either
    vocabulary ("stop"/"length"/"tool_calls" or "end_turn"/"max_tokens"/"tool_use"); None
    picks the natural one. `chunk_delay_s` spaces streamed events (idle-timeout tests).
    """

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    chunk_delay_s: float = 0.0
    stop_sequence: str | None = None  # Anthropic: which stop sequence ended the turn


@dataclass(frozen=True, slots=True)
class Fail:
    """An HTTP error in the family's own error shape, with `Retry-After` when given."""

    status: int = 500
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None
    error_type: str | None = None  # overrides the type derived from the status


@dataclass(frozen=True, slots=True)
class Slow:
    """Wait `delay_s` before doing `then` (the default reply when None)."""

    delay_s: float
    then: Behaviour | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """Abort the connection without sending a byte of response."""


@dataclass(frozen=True, slots=True)
class StreamThenDrop:
    """Send the stream's preamble and `n_chunks` content deltas, then cut the connection.

    Preamble events (OpenAI's role chunk, Anthropic's message_start/content_block_start/ping)
    are not counted, so `n_chunks=0` drops before the first token. The final events
    (finish_reason, usage, [DONE], message_delta, message_stop) are never sent. A
    non-streaming request gets half of its JSON body before the cut.
    """

    n_chunks: int = 1
    text: str | None = None  # None: the echo


Behaviour: TypeAlias = Reply | Fail | Slow | Drop | StreamThenDrop


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What the fake received; header names are lower-cased, `body` is the decoded JSON."""

    family: Family
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Json | None
    received_at: float  # time.monotonic()


# -- wire constants -------------------------------------------------------------------------

_JSON_HEADERS = {"Content-Type": "application/json"}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_SPLIT_TEXT = re.compile(r"\S+\s*|\s+")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_JSON_FRAGMENT = 12  # characters of tool arguments per streamed fragment
_FINGERPRINT = "fp_fakeupstream"

_TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_TO_OPENAI_FINISH = {v: k for k, v in _TO_ANTHROPIC_STOP.items()} | {"stop_sequence": "stop"}

_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_OPENAI_ERROR_MESSAGES = {
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_ERROR_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error",
    529: "Overloaded",
}
_AZURE_CONTENT_FILTER = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_AZURE_PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": _AZURE_CONTENT_FILTER}]


def _sse_data(payload: Json) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _sse_event(event: str, payload: Json) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_OPENAI_DONE = b"data: [DONE]\n\n"
# Azure opens a stream with a choice-less chunk carrying only the prompt filter results.
_AZURE_OPENING_CHUNK = _sse_data(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": _AZURE_PROMPT_FILTER,
    }
)
_ANTHROPIC_PING = _sse_event("ping", {"type": "ping"})
_ANTHROPIC_STOP = _sse_event("message_stop", {"type": "message_stop"})


def _words(text: str) -> int:
    return len(text.split())


def _message_text(content: object) -> str:
    """The text of a message's content, either a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") == "tool_result":
                    parts.append(_message_text(part.get("content")))
        return " ".join(parts)
    return ""


def _last_user_text(messages: object) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _message_text(message.get("content"))
    return ""


def _prompt_words(body: Json) -> int:
    total = _words(_message_text(body.get("system")))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += _words(_message_text(message.get("content")))
    return max(total, 1)


def embedding_for(value: object, dimensions: int = 8) -> list[float]:
    """The fake's deterministic unit vector for one embeddings input, float32-exact."""
    raw = value.encode() if isinstance(value, str) else orjson.dumps(value)
    digest = hashlib.shake_128(raw).digest(4 * dimensions)
    ints = struct.unpack(f"<{dimensions}I", digest)
    floats = [n / 2147483648.0 - 1.0 for n in ints]
    norm = math.sqrt(sum(f * f for f in floats)) or 1.0
    return array("f", [f / norm for f in floats]).tolist()


# -- the resolved answer for one request ----------------------------------------------------


@dataclass(slots=True)
class _Answer:
    model: str
    text: str
    tool_calls: list[ToolCall]  # every id filled in
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # OpenAI vocabulary
    cached_tokens: int
    cache_creation_tokens: int
    stop_sequence: str | None = None


_Render: TypeAlias = Callable[[Reply | StreamThenDrop | None], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class _Event:
    data: bytes
    kind: Literal["frame", "content", "final"]


class FakeUpstream:
    """A local provider; `await start()`/`await stop()` or `async with FakeUpstream() as up`."""

    def __init__(
        self,
        *,
        api_keys: Collection[str] = (DEFAULT_API_KEY,),
        embedding_dimensions: int = 8,
        models: Sequence[str] = DEFAULT_MODELS,
        record_requests: bool = True,
    ) -> None:
        self.api_keys: set[str] = set(api_keys)
        self.embedding_dimensions = embedding_dimensions
        self.models = list(models)
        self.record_requests = record_requests
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[tuple[Family, Endpoint], deque[Behaviour]] = {}
        self._defaults: dict[tuple[Family, Endpoint], Behaviour] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None  # kept after stop(): "upstream down" tests aim at it

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeUpstream:
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._azure_embeddings)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # Short shutdown: a handler still sleeping in `Slow` must not hold up teardown.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        # A provider's front end takes a burst of new connections (a swarm's fan-out opens
        # hundreds at once); aiohttp's default backlog of 128 would drop SYNs past it, and
        # each dropped one costs the client a 1 s retransmission: the fake, not the gateway.
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        port = runner.addresses[0][1]
        self._runner = runner
        self._url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        """Stop serving; `base_url` stays known, so clients then see a refused connection."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._url is None:
            raise RuntimeError("FakeUpstream was never started")
        return self._url

    # -- scripting ------------------------------------------------------------------------

    def script(self, family: Family, *behaviours: Behaviour, endpoint: Endpoint = "chat") -> None:
        """Queue behaviours for the next requests of `family`'s `endpoint`, in order."""
        self._scripts.setdefault((family, endpoint), deque()).extend(behaviours)

    def set_default(
        self, family: Family, behaviour: Behaviour | None, *, endpoint: Endpoint = "chat"
    ) -> None:
        """What to do once the script is used up (None: back to the echo)."""
        if behaviour is None:
            self._defaults.pop((family, endpoint), None)
        else:
            self._defaults[(family, endpoint)] = behaviour

    def pending(self, family: Family, *, endpoint: Endpoint = "chat") -> int:
        """How many scripted behaviours are still unused."""
        return len(self._scripts.get((family, endpoint), ()))

    def requests_for(self, family: Family) -> list[RecordedRequest]:
        return [r for r in self.requests if r.family == family]

    def _next(self, family: Family, endpoint: Endpoint) -> Behaviour | None:
        queue = self._scripts.get((family, endpoint))
        if queue:
            return queue.popleft()
        return self._defaults.get((family, endpoint))

    # -- request plumbing -----------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{next(self._ids):024x}"

    def _record(self, family: Family, request: web.Request, body: Json | None) -> None:
        if self.record_requests:
            self.requests.append(
                RecordedRequest(
                    family=family,
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    received_at=time.monotonic(),
                )
            )

    @staticmethod
    async def _read_json(request: web.Request) -> Json | None:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    @staticmethod
    def _json(
        payload: Json, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            body=orjson.dumps(payload),
            status=status,
            headers=_JSON_HEADERS if headers is None else {**_JSON_HEADERS, **headers},
        )

    @staticmethod
    async def _run(
        behaviour: Behaviour | None,
        request: web.Request,
        *,
        fail: Callable[[Fail], web.Response],
        reply: _Render,
    ) -> web.StreamResponse:
        """Carry out one behaviour; `fail` and `reply` render it in the family's format."""
        while isinstance(behaviour, Slow):
            await asyncio.sleep(behaviour.delay_s)
            behaviour = behaviour.then
        if isinstance(behaviour, Fail):
            return fail(behaviour)
        if isinstance(behaviour, Drop):
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never sent: aiohttp swallows the reset
        return await reply(behaviour)

    @staticmethod
    async def _write_stream(
        request: web.Request, events: list[_Event], behaviour: Reply | StreamThenDrop
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        if isinstance(behaviour, StreamThenDrop):
            sent = bytearray()
            remaining = behaviour.n_chunks
            for event in events:
                if event.kind == "final" or (event.kind == "content" and remaining == 0):
                    break
                sent += event.data
                if event.kind == "content":
                    remaining -= 1
            await response.write(bytes(sent))
            if request.transport is not None:
                request.transport.close()  # close, not abort: the bytes above still arrive
            return response
        if behaviour.chunk_delay_s > 0:
            for event in events:
                await response.write(event.data)
                await asyncio.sleep(behaviour.chunk_delay_s)
        else:
            await response.write(b"".join(event.data for event in events))
        await response.write_eof()
        return response

    @staticmethod
    async def _write_truncated_json(request: web.Request, payload: Json) -> web.StreamResponse:
        raw = orjson.dumps(payload)
        response = web.StreamResponse(headers=_JSON_HEADERS)
        response.content_length = len(raw)
        await response.prepare(request)
        await response.write(raw[: len(raw) // 2])
        if request.transport is not None:
            request.transport.close()
        return response

    def _answer(
        self, behaviour: Reply | StreamThenDrop | None, body: Json, *, model: str, id_prefix: str
    ) -> _Answer:
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        text = reply.text
        if isinstance(behaviour, StreamThenDrop):
            text = behaviour.text
        if text is None:
            text = "" if reply.tool_calls else ECHO_PREFIX + _last_user_text(body.get("messages"))
        tool_calls = [
            call
            if call.id is not None
            else ToolCall(call.name, call.arguments_json, id_prefix + self._new_id())
            for call in reply.tool_calls
        ]
        if reply.usage is None:
            prompt_tokens = _prompt_words(body)
            completion_tokens = max(
                _words(text) + sum(1 + _words(c.arguments_json) for c in tool_calls), 1
            )
        else:
            prompt_tokens, completion_tokens = reply.usage
        finish = reply.finish_reason
        if finish is None:
            finish = "tool_calls" if tool_calls else "stop"
        return _Answer(
            model=model,
            text=text,
            tool_calls=tool_calls,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=_TO_OPENAI_FINISH.get(finish, finish),
            cached_tokens=reply.cached_tokens,
            cache_creation_tokens=reply.cache_creation_tokens,
            stop_sequence=reply.stop_sequence,
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        message = f"Invalid URL ({request.method} {request.path})"
        if "x-api-key" in request.headers or "anthropic-version" in request.headers:
            return self._anthropic_error(404, "not_found_error", "Not found")
        return self._openai_error(404, message, "invalid_request_error", None, None)

    # -- OpenAI (and Together, Moonshot) ---------------------------------------------------

    @staticmethod
    def _openai_error(
        status: int,
        message: str,
        error_type: str | None,
        code: str | None,
        param: str | None,
        *,
        retry_after: float | None = None,
    ) -> web.Response:
        payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        headers = {"x-request-id": "req_fake"}
        if retry_after is not None:
            headers["Retry-After"] = _seconds(retry_after)
        return FakeUpstream._json(payload, status=status, headers=headers)

    def _openai_fail(self, fail: Fail) -> web.Response:
        param = "messages" if fail.code == "context_length_exceeded" else None
        return self._openai_error(
            fail.status,
            fail.message or _OPENAI_ERROR_MESSAGES.get(fail.status, f"Fake failure {fail.status}"),
            fail.error_type or _OPENAI_ERROR_TYPES.get(fail.status, "server_error"),
            fail.code or _OPENAI_ERROR_CODES.get(fail.status),
            param,
            retry_after=fail.retry_after,
        )

    def _openai_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return self._openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            )
        key = header[7:].strip()
        if key not in self.api_keys:
            masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:]
            return self._openai_error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
                None,
            )
        return None

    def _openai_bad_body(
        self, body: Json | None, *, required: Sequence[str]
    ) -> web.Response | None:
        if body is None:
            return self._openai_error(
                400,
                "We could not parse the JSON body of your request. The OpenAI API expects a "
                "JSON payload, but what was sent was not valid JSON.",
                "invalid_request_error",
                None,
                None,
            )
        for name in required:
            if name not in body:
                return self._openai_error(
                    400,
                    f"Missing required parameter: '{name}'.",
                    "invalid_request_error",
                    "missing_required_parameter",
                    name,
                )
        return None

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record("openai", request, body)
        problem = self._openai_auth(request) or self._openai_bad_body(
            body, required=("model", "messages")
        )
        if problem is not None:
            return problem
        assert body is not None  # the checks above answer a body that is not a JSON object
        return await self._chat_completion(request, body, family="openai", model=body["model"])

    async def _chat_completion(
        self, request: web.Request, body: Json, *, family: Family, model: str
    ) -> web.StreamResponse:
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        azure = family == "azure"

        async def reply(behaviour: Reply | StreamThenDrop | None) -> web.StreamResponse:
            answer = self._answer(behaviour, body, model=model, id_prefix="call_")
            completion_id = "chatcmpl-" + self._new_id()
            if stream:
                events = self._openai_chunks(answer, completion_id, include_usage, azure=azure)
                return await self._write_stream(request, events, behaviour or Reply())
            payload = self._openai_completion(answer, completion_id, azure=azure)
            if isinstance(behaviour, StreamThenDrop):
                return await self._write_truncated_json(request, payload)
            return self._json(payload, headers={"x-request-id": "req_" + completion_id[9:]})

        return await self._run(
            self._next(family, "chat"),
            request,
            fail=self._azure_fail if azure else self._openai_fail,
            reply=reply,
        )

    @staticmethod
    def _openai_usage(answer: _Answer) -> Json:
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _openai_completion(self, answer: _Answer, completion_id: str, *, azure: bool) -> Json:
        message: Json = {
            "role": "assistant",
            "content": answer.text if answer.text or not answer.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in answer.tool_calls
            ]
        choice: Json = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": answer.finish_reason,
        }
        payload: Json = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [choice],
            "usage": self._openai_usage(answer),
            "system_fingerprint": _FINGERPRINT,
        }
        if azure:
            choice["content_filter_results"] = _AZURE_CONTENT_FILTER
            payload["prompt_filter_results"] = _AZURE_PROMPT_FILTER
        else:
            payload["service_tier"] = "default"
        return payload

    def _openai_chunks(
        self, answer: _Answer, completion_id: str, include_usage: bool, *, azure: bool
    ) -> list[_Event]:
        created = int(time.time())
        events: list[_Event] = []
        if azure:
            events.append(_Event(_AZURE_OPENING_CHUNK, "frame"))

        def chunk(delta: Json, finish_reason: str | None = None) -> bytes:
            payload: Json = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "system_fingerprint": _FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                payload["usage"] = None
            return _sse_data(payload)

        pieces = _SPLIT_TEXT.findall(answer.text)
        if pieces or not answer.tool_calls:
            events.append(
                _Event(chunk({"role": "assistant", "content": "", "refusal": None}), "frame")
            )
            events.extend(_Event(chunk({"content": piece}), "content") for piece in pieces)
        for index, call in enumerate(answer.tool_calls):
            head: Json = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
            if index == 0 and not pieces:
                head = {"role": "assistant", "content": None, "refusal": None, **head}
            events.append(_Event(chunk(head), "content"))
            arguments = call.arguments_json
            for start in range(0, len(arguments), _JSON_FRAGMENT):
                fragment = arguments[start : start + _JSON_FRAGMENT]
                delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
                events.append(_Event(chunk(delta), "content"))
        events.append(_Event(chunk({}, answer.finish_reason), "final"))
        if include_usage:
            usage_chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "system_fingerprint": _FINGERPRINT,
                "choices": [],
                "usage": self._openai_usage(answer),
            }
            events.append(_Event(_sse_data(usage_chunk), "final"))
        events.append(_Event(_OPENAI_DONE, "final"))
        return events

    async def _openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record("openai", request, body)
        problem = self._openai_auth(request) or self._openai_bad_body(
            body, required=("model", "input")
        )
        if problem is not None:
            return problem
        assert body is not None  # the checks above answer a body that is not a JSON object
        return await self._embeddings(request, body, family="openai", model=body["model"])

    async def _embeddings(
        self, request: web.Request, body: Json, *, family: Family, model: str
    ) -> web.StreamResponse:
        raw_input = body["input"]
        # A list of strings or token lists is a batch; one string or one token list is not.
        batch = (
            raw_input
            if isinstance(raw_input, list) and raw_input and isinstance(raw_input[0], str | list)
            else [raw_input]
        )
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) else self.embedding_dimensions
        as_base64 = body.get("encoding_format") == "base64"

        async def reply(behaviour: Reply | StreamThenDrop | None) -> web.StreamResponse:
            data = []
            for index, item in enumerate(batch):
                vector: list[float] | str = embedding_for(item, size)
                if as_base64:
                    vector = base64.b64encode(array("f", vector).tobytes()).decode()
                data.append({"object": "embedding", "index": index, "embedding": vector})
            tokens = sum(_words(i) if isinstance(i, str) else len(i) for i in batch)
            if isinstance(behaviour, Reply) and behaviour.usage is not None:
                tokens = behaviour.usage[0]
            payload = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            if isinstance(behaviour, StreamThenDrop):
                return await self._write_truncated_json(request, payload)
            return self._json(payload)

        return await self._run(
            self._next(family, "embeddings"),
            request,
            fail=self._azure_fail if family == "azure" else self._openai_fail,
            reply=reply,
        )

    async def _models(self, request: web.Request) -> web.Response:
        if "x-api-key" in request.headers or "anthropic-version" in request.headers:
            self._record("anthropic", request, None)
            problem = self._anthropic_auth(request)
            if problem is not None:
                return problem
            data = [
                {
                    "type": "model",
                    "id": name,
                    "display_name": name,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for name in ANTHROPIC_MODELS
            ]
            return self._json(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                }
            )
        self._record("openai", request, None)
        problem = self._openai_auth(request)
        if problem is not None:
            return problem
        listing = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for name in self.models
        ]
        return self._json({"object": "list", "data": listing})

    # -- Azure OpenAI ----------------------------------------------------------------------

    @staticmethod
    def _azure_error(
        status: int, code: str, message: str, *, retry_after: float | None = None, **extra: Any
    ) -> web.Response:
        headers = {"apim-request-id": "fake-apim-request"}
        if retry_after is not None:
            headers["Retry-After"] = _seconds(retry_after)
            headers["retry-after-ms"] = str(round(retry_after * 1000))
        return FakeUpstream._json(
            {"error": {"code": code, "message": message, **extra}}, status=status, headers=headers
        )

    def _azure_fail(self, fail: Fail) -> web.Response:
        if fail.status == 429 and fail.message is None:
            after = _seconds(fail.retry_after) if fail.retry_after is not None else "1"
            message = (
                "Requests to the ChatCompletions_Create Operation have exceeded the token rate "
                f"limit of your current pricing tier. Please retry after {after} seconds."
            )
        else:
            message = fail.message or _OPENAI_ERROR_MESSAGES.get(
                fail.status, f"Fake failure {fail.status}"
            )
        extra: Json = {}
        if fail.status == 400 or fail.code is not None:
            param = "messages" if fail.code == "context_length_exceeded" else None
            extra = {
                "param": param,
                "type": fail.error_type or _OPENAI_ERROR_TYPES.get(fail.status, "server_error"),
            }
        return self._azure_error(
            fail.status,
            fail.code or str(fail.status),
            message,
            retry_after=fail.retry_after,
            **extra,
        )

    def _azure_precheck(self, request: web.Request, body: Json | None) -> web.Response | None:
        # Azure answers a missing api-version with a bare 404, an unknown one with a 400.
        version = request.query.get("api-version")
        if version is None:
            return self._azure_error(404, "404", "Resource not found")
        if _API_VERSION.fullmatch(version) is None:
            return self._azure_error(400, "BadRequest", "API version not supported")
        key = request.headers.get("api-key")
        bearer = request.headers.get("Authorization", "")
        token = bearer[7:].strip() if bearer.startswith("Bearer ") else None
        if key not in self.api_keys and token not in self.api_keys:
            return self._azure_error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        if body is None:
            return self._azure_error(400, "BadRequest", "Request body is not valid JSON.")
        return None

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record("azure", request, body)
        problem = self._azure_precheck(request, body)
        if problem is not None:
            return problem
        assert body is not None  # the checks above answer a body that is not a JSON object
        if "messages" not in body:
            return self._azure_error(
                400,
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
                param="messages",
                type="invalid_request_error",
            )
        model = body.get("model") or request.match_info["deployment"]
        return await self._chat_completion(request, body, family="azure", model=model)

    async def _azure_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record("azure", request, body)
        problem = self._azure_precheck(request, body)
        if problem is not None:
            return problem
        assert body is not None  # the checks above answer a body that is not a JSON object
        if "input" not in body:
            return self._azure_error(
                400, "missing_required_parameter", "Missing required parameter: 'input'."
            )
        model = body.get("model") or request.match_info["deployment"]
        return await self._embeddings(request, body, family="azure", model=model)

    # -- Anthropic -------------------------------------------------------------------------

    @staticmethod
    def _anthropic_error(
        status: int, error_type: str, message: str, *, retry_after: float | None = None
    ) -> web.Response:
        payload = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_fake",
        }
        headers = {"request-id": "req_fake"}
        if retry_after is not None:
            headers["retry-after"] = _seconds(retry_after)
        return FakeUpstream._json(payload, status=status, headers=headers)

    def _anthropic_fail(self, fail: Fail) -> web.Response:
        return self._anthropic_error(
            fail.status,
            fail.error_type or _ANTHROPIC_ERROR_TYPES.get(fail.status, "api_error"),
            fail.message
            or _ANTHROPIC_ERROR_MESSAGES.get(fail.status, f"Fake failure {fail.status}"),
            retry_after=fail.retry_after,
        )

    def _anthropic_auth(self, request: web.Request) -> web.Response | None:
        # The classic `x-api-key`, or `Authorization: Bearer`, which the 2.x SDK sends.
        key = request.headers.get("x-api-key")
        if key is None:
            bearer = request.headers.get("Authorization", "")
            key = bearer[7:].strip() if bearer.startswith("Bearer ") else None
        if not key:
            return self._anthropic_error(
                401, "authentication_error", "x-api-key header is required"
            )
        if key not in self.api_keys:
            return self._anthropic_error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self._anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        return None

    def _anthropic_bad_body(self, body: Json | None) -> web.Response | None:
        if body is None:
            return self._anthropic_error(400, "invalid_request_error", "Invalid JSON body")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self._anthropic_error(
                    400, "invalid_request_error", f"{name}: Field required"
                )
        messages = body["messages"]
        if not isinstance(messages, list):
            return self._anthropic_error(
                400, "invalid_request_error", "messages: Input should be a valid list"
            )
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            # "system" is allowed in the list since the 2.x SDK's API version.
            if role not in ("user", "assistant", "system"):
                return self._anthropic_error(
                    400,
                    "invalid_request_error",
                    f"messages.{index}.role: Input should be 'user', 'assistant' or 'system'",
                )
        return None

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record("anthropic", request, body)
        problem = self._anthropic_auth(request) or self._anthropic_bad_body(body)
        if problem is not None:
            return problem
        assert body is not None  # the checks above answer a body that is not a JSON object
        stream = body.get("stream") is True

        async def reply(behaviour: Reply | StreamThenDrop | None) -> web.StreamResponse:
            answer = self._answer(behaviour, body, model=body["model"], id_prefix="toolu_")
            message_id = "msg_" + self._new_id()
            if stream:
                events = self._anthropic_events(answer, message_id)
                return await self._write_stream(request, events, behaviour or Reply())
            payload = self._anthropic_message(answer, message_id)
            if isinstance(behaviour, StreamThenDrop):
                return await self._write_truncated_json(request, payload)
            return self._json(payload, headers={"request-id": "req_" + message_id[4:]})

        return await self._run(
            self._next("anthropic", "chat"),
            request,
            fail=self._anthropic_fail,
            reply=reply,
        )

    def _anthropic_blocks(self, answer: _Answer) -> list[Json]:
        blocks: list[Json] = []
        if answer.text or not answer.tool_calls:
            blocks.append({"type": "text", "text": answer.text})
        for call in answer.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": orjson.loads(call.arguments_json),
                }
            )
        return blocks

    @staticmethod
    def _anthropic_usage(answer: _Answer, output_tokens: int) -> Json:
        return {
            "input_tokens": answer.prompt_tokens,
            "cache_creation_input_tokens": answer.cache_creation_tokens,
            "cache_read_input_tokens": answer.cached_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    @staticmethod
    def _anthropic_stop(answer: _Answer) -> str:
        if answer.stop_sequence is not None:
            return "stop_sequence"
        return _TO_ANTHROPIC_STOP.get(answer.finish_reason, answer.finish_reason)

    def _anthropic_message(self, answer: _Answer, message_id: str) -> Json:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": self._anthropic_blocks(answer),
            "stop_reason": self._anthropic_stop(answer),
            "stop_sequence": answer.stop_sequence,
            "usage": self._anthropic_usage(answer, answer.completion_tokens),
        }

    def _anthropic_events(self, answer: _Answer, message_id: str) -> list[_Event]:
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._anthropic_usage(answer, 1),
            },
        }
        events = [_Event(_sse_event("message_start", start), "frame")]
        for index, block in enumerate(self._anthropic_blocks(answer)):
            deltas: list[Json]
            if block["type"] == "text":
                opening: Json = {"type": "text", "text": ""}
                deltas = [
                    {"type": "text_delta", "text": piece}
                    for piece in _SPLIT_TEXT.findall(block["text"])
                ]
            else:
                opening = {**block, "input": {}}
                arguments = orjson.dumps(block["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": arguments[i : i + _JSON_FRAGMENT]}
                    for i in range(0, len(arguments), _JSON_FRAGMENT)
                ]
            events.append(
                _Event(
                    _sse_event(
                        "content_block_start",
                        {"type": "content_block_start", "index": index, "content_block": opening},
                    ),
                    "frame",
                )
            )
            if index == 0:
                events.append(_Event(_ANTHROPIC_PING, "frame"))
            events.extend(
                _Event(
                    _sse_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    ),
                    "content",
                )
                for delta in deltas
            )
            events.append(
                _Event(
                    _sse_event(
                        "content_block_stop", {"type": "content_block_stop", "index": index}
                    ),
                    "frame",
                )
            )
        message_delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": self._anthropic_stop(answer),
                "stop_sequence": answer.stop_sequence,
            },
            "usage": {"output_tokens": answer.completion_tokens},
        }
        events.append(_Event(_sse_event("message_delta", message_delta), "final"))
        events.append(_Event(_ANTHROPIC_STOP, "final"))
        return events


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A running `FakeUpstream` with an empty script, fresh for each test."""
    async with FakeUpstream() as upstream:
        yield upstream
