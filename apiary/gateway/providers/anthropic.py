"""Anthropic's Messages API, translated to and from OpenAI's chat-completions format.

Going out: system messages become `system`, tool results become `tool_result` blocks in a
user turn, assistant tool calls become `tool_use` blocks, tools and tool_choice are mapped,
`max_tokens` is always sent (Anthropic requires it). Coming back: text blocks join into the
message content, `tool_use` blocks become `tool_calls`, stop reasons and usage are mapped.
Streams are translated event by event into OpenAI chunks, tool-call argument deltas included.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apiary.gateway.config import ProviderConfig
from apiary.gateway.http import HttpClient, Response
from apiary.gateway.providers.base import (
    JSON,
    Completion,
    ProviderError,
    StreamState,
    Usage,
    classify_status,
    post_json,
    read_body,
    retry_after,
)
from apiary.gateway.providers.openai import sse_data

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


# -- request: OpenAI → Anthropic ---------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _blocks(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:"):
                media_type, _, data = url[5:].partition(";base64,")
                source = {"type": "base64", "media_type": media_type, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
    return blocks


def _append(messages: list[JSON], role: str, blocks: list[JSON]) -> None:
    # Anthropic wants user and assistant turns to alternate: merge neighbours.
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def to_anthropic(request: JSON, model: str) -> JSON:
    system: list[str] = []
    messages: list[JSON] = []
    for message in request.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "user":
            _append(messages, "user", _blocks(message.get("content")))
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    arguments = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": arguments,
                    }
                )
            _append(messages, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text_of(message.get("content")),
            }
            _append(messages, "user", [result])
    body: JSON = {
        "model": model,
        "messages": messages,
        "max_tokens": request.get("max_completion_tokens")
        or request.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if request.get(key) is not None:
            body[key] = request[key]
    stop = request.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.get("tools"):
        body["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters")
                or {"type": "object", "properties": {}},
            }
            for tool in request["tools"]
            if tool.get("type") == "function"
        ]
        choice = request.get("tool_choice")
        if choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif choice == "none":
            body["tool_choice"] = {"type": "none"}
        elif isinstance(choice, dict) and choice.get("type") == "function":
            body["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
        elif choice == "auto":
            body["tool_choice"] = {"type": "auto"}
    user = request.get("user")
    if user:
        body["metadata"] = {"user_id": str(user)}
    return body


# -- response: Anthropic → OpenAI --------------------------------------------------------


def usage_of(raw: JSON | None) -> Usage | None:
    if not raw:
        return None
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_write = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0) + cache_read + cache_write,
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=cache_read,
    )


def _openai_usage(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def from_anthropic(message: JSON) -> tuple[JSON, Usage | None]:
    text = "".join(b.get("text", "") for b in message.get("content", []) if b["type"] == "text")
    tool_calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": orjson.dumps(block["input"]).decode()},
        }
        for block in message.get("content", [])
        if block["type"] == "tool_use"
    ]
    reply: JSON = {"role": "assistant", "content": text or None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = usage_of(message.get("usage"))
    choice: JSON = {
        "index": 0,
        "message": reply,
        "finish_reason": STOP_REASONS.get(message.get("stop_reason") or "", "stop"),
    }
    if message.get("stop_reason") == "stop_sequence" and message.get("stop_sequence"):
        # Which stop string ended the turn, where vLLM reports it: /v1/messages passes it on.
        choice["stop_reason"] = message["stop_sequence"]
    document: JSON = {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [choice],
    }
    if usage is not None:
        document["usage"] = _openai_usage(usage)
    return document, usage


def error_from_anthropic(status: int, body: bytes, headers: Any, provider: str) -> ProviderError:
    message, kind = f"upstream returned HTTP {status}", None
    try:
        error = orjson.loads(body).get("error") or {}
        message = str(error.get("message") or message)
        kind = error.get("type")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return ProviderError(
        "server" if kind == "overloaded_error" else classify_status(status, message),
        message,
        status=status,
        retry_after_s=retry_after(headers),
        provider=provider,
    )


class AnthropicProvider:
    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http
        self.timeout_s = config.timeout_s

    def _headers(self) -> dict[str, str]:
        assert self.config.api_key is not None  # required by the config for this kind
        return {
            "content-type": "application/json",
            "x-api-key": self.config.api_key.get_secret_value(),
            "anthropic-version": API_VERSION,
        }

    async def _post(self, body: JSON) -> Response:
        return await post_json(
            self.http,
            f"{self.config.url}/v1/messages",
            body,
            headers=self._headers(),
            timeout_s=self.timeout_s,
            provider=self.config.name,
            parse_error=error_from_anthropic,
        )

    def _translated(self, request: JSON, model: str) -> JSON:
        """The request in Anthropic's format; a shape the translation cannot read (a tool
        call that is not an object, an image part without its URL) is the request's fault."""
        try:
            return to_anthropic(request, model)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ProviderError(
                "client",
                f"the request cannot be put in Anthropic's format: {error}",
                status=400,
                provider=self.config.name,
            ) from None

    async def complete(self, request: JSON, model: str) -> Completion:
        response = await self._post(self._translated(request, model))
        raw = await read_body(response, self.config.name)
        document, usage = from_anthropic(orjson.loads(raw))
        return Completion(body=orjson.dumps(document), usage=usage, model=document["model"])

    async def embed(self, request: JSON, model: str) -> Completion:
        raise ProviderError(
            "client", "Anthropic has no embeddings API", status=400, provider=self.config.name
        )

    async def stream(self, request: JSON, model: str, state: StreamState) -> AsyncIterator[bytes]:
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        response = await self._post({**self._translated(request, model), "stream": True})
        chunk_id, created = "", int(time.time())
        tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        input_tokens: JSON = {}
        finish: str | None = None
        matched: str | None = None  # the stop sequence that ended the turn, if one did

        def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
            choice: JSON = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            if finish_reason is not None and matched is not None:
                choice["stop_reason"] = matched
            return orjson.dumps(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": state.model,
                    "choices": [choice],
                }
            )

        try:
            async for payload in sse_data(response, self.config.name):
                event = orjson.loads(payload)
                kind = event.get("type")
                if kind == "message_start":
                    message = event["message"]
                    chunk_id, state.model = message.get("id", ""), message.get("model", "")
                    input_tokens = message.get("usage") or {}
                    yield chunk({"role": "assistant", "content": ""})
                elif kind == "content_block_start":
                    block = event["content_block"]
                    if block["type"] == "tool_use":
                        index = tool_index.setdefault(event["index"], len(tool_index))
                        state.first_token = True
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": index,
                                        "id": block["id"],
                                        "type": "function",
                                        "function": {"name": block["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                elif kind == "content_block_delta":
                    delta = event["delta"]
                    state.first_token = True
                    if delta["type"] == "text_delta":
                        yield chunk({"content": delta["text"]})
                    elif delta["type"] == "input_json_delta":
                        index = tool_index.get(event["index"], 0)
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": index,
                                        "function": {"arguments": delta["partial_json"]},
                                    }
                                ]
                            }
                        )
                elif kind == "message_delta":
                    finish = STOP_REASONS.get(event["delta"].get("stop_reason") or "", "stop")
                    if event["delta"].get("stop_reason") == "stop_sequence":
                        matched = event["delta"].get("stop_sequence")
                    state.usage = usage_of({**input_tokens, **(event.get("usage") or {})})
                elif kind == "error":
                    error = event.get("error") or {}
                    raise ProviderError(
                        "server",
                        str(error.get("message", "upstream stream error")),
                        provider=self.config.name,
                    )
                elif kind == "message_stop":
                    break
            yield chunk({}, finish or "stop")
            if wants_usage and state.usage is not None:
                yield orjson.dumps(
                    {
                        "id": chunk_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": state.model,
                        "choices": [],
                        "usage": _openai_usage(state.usage),
                    }
                )
        finally:
            response.release()
