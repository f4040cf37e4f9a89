"""Anthropic's Messages format, translated to and from the gateway's chat call.

`POST /v1/messages` (apiary/gateway/anthropic_api.py) is served by the same chat call as
`/v1/chat/completions`, so routing, fallback, caches, limits, budgets and the ledger apply
to it unchanged: a Messages request becomes a chat-completions body (`to_chat`), the
answer comes back as a `message` (`from_chat`), and a stream of chat chunks becomes
Anthropic's event sequence (`MessageEvents`).

Going in: `system` (a string or text blocks), and any system turn in the list, becomes a
system message; a user turn's
`tool_result` blocks become `tool` messages (before the rest of that turn, as Anthropic
requires them first); an assistant turn's `tool_use` blocks become `tool_calls`; image
blocks become image parts, which the route's model accepts or refuses with a 400 of its
own; `tools`, `tool_choice`, `stop_sequences`, `temperature`, `top_p`, `top_k` and
`metadata.user_id` map to their chat names; `output_config.format` (a JSON schema) becomes
`response_format`. Thinking blocks sent back in the history are left out, as Anthropic's
own API does with earlier turns' thinking. What has no chat equivalent (extended thinking,
server tools, documents, unknown fields) is a 400 naming it, never dropped.

Coming back: text and `tool_use` blocks, `stop_reason` from the finish reason (a matched
stop sequence is known when the provider reports it, as vLLM and the Anthropic adapter
do in the choice's `stop_reason`), and usage with the prompt's cached part apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from apiary.errors import BadRequest, anthropic_error

JSON = dict[str, Any]

MAX_TOKENS_LIMIT = 2**31 - 1

# Fields a Messages request may carry. Accepted and not forwarded: `service_tier`, `speed`
# and `inference_geo` (placement hints for Anthropic's own fleet), `cache_control` (a
# prompt-caching hint; providers that cache do it without one), `diagnostics` (asks for a
# cache-miss report, which is then null, as Anthropic's is when it has none) and the
# Anthropic account's `workspace_id` and `user_profile_id` (an Apiary key names the tenant).
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "thinking",
        "output_config",
        "service_tier",
        "inference_geo",
        "cache_control",
        "container",
        "speed",
        "diagnostics",
        "workspace_id",
        "user_profile_id",
    }
)

_ROLES = frozenset({"user", "assistant", "system"})

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _text_blocks(value: Any, where: str) -> str:
    """The text of a string or a list of text blocks (`system`, a tool result)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{where}: must be a string or a list of text blocks")
    texts = []
    for index, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise BadRequest(f"{where}.{index}: must be a text block, not {kind!r}")
        text = block.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.{index}.text: required, a string")
        texts.append(text)
    return "\n".join(texts)


def _image_part(block: JSON, where: str) -> JSON:
    source = block.get("source")
    if not isinstance(source, dict):
        raise BadRequest(f"{where}.source: required, an object")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise BadRequest(f"{where}.source: a base64 image needs media_type and data strings")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise BadRequest(f"{where}.source.type: must be 'base64' or 'url' (with its url)")


def _tool_result(block: JSON, where: str) -> JSON:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise BadRequest(f"{where}.tool_use_id: required, a string")
    content = block.get("content", "")
    if isinstance(content, list):
        parts: list[JSON] = []
        for index, inner in enumerate(content):
            inner_where = f"{where}.content.{index}"
            if isinstance(inner, dict) and inner.get("type") == "text":
                parts.append({"type": "text", "text": str(inner.get("text", ""))})
            elif isinstance(inner, dict) and inner.get("type") == "image":
                # Chat tool messages carry text only: an image result has no place there.
                raise BadRequest(
                    f"{inner_where}: an image in a tool result is not supported; "
                    "send it in a user turn's image block"
                )
            else:
                kind = inner.get("type") if isinstance(inner, dict) else type(inner).__name__
                raise BadRequest(f"{inner_where}: must be a text block, not {kind!r}")
        text = "\n".join(part["text"] for part in parts)
    elif isinstance(content, str):
        text = content
    else:
        raise BadRequest(f"{where}.content: must be a string or a list of text blocks")
    if block.get("is_error") is True:
        # Chat has no error flag on a tool message: say it in the text the model reads.
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _user_turn(content: Any, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[JSON] = []
    parts: list[JSON] = []
    for index, block in enumerate(content):
        block_where = f"{where}.{index}"
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise BadRequest(f"{block_where}.text: required, a string")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, block_where))
        elif kind == "tool_result":
            results.append(_tool_result(block, block_where))
        else:
            raise BadRequest(
                f"{block_where}.type: {kind!r} blocks are not supported in a user turn "
                "(text, image and tool_result are)"
            )
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        joined: str | list[JSON] = "\n".join(part["text"] for part in parts) if only_text else parts
        results.append({"role": "user", "content": joined})
    return results


def _assistant_turn(content: Any, where: str) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JSON] = []
    for index, block in enumerate(content):
        block_where = f"{where}.{index}"
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise BadRequest(f"{block_where}.text: required, a string")
            texts.append(block["text"])
        elif kind == "tool_use":
            name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise BadRequest(f"{block_where}: a tool_use block needs id and name strings")
            if not isinstance(arguments, dict):
                raise BadRequest(f"{block_where}.input: must be an object")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' thinking is not part of the prompt (as at Anthropic)
        else:
            raise BadRequest(
                f"{block_where}.type: {kind!r} blocks are not supported in an assistant turn "
                "(text and tool_use are)"
            )
    message: JSON = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(body: JSON) -> list[JSON]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: required, a non-empty list")
    chat: list[JSON] = []
    system = body.get("system")
    if system is not None:
        text = _text_blocks(system, "system")
        if text:
            chat.append({"role": "system", "content": text})
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(f"{where}.role: must be 'user', 'assistant' or 'system'")
        content = message.get("content")
        if not isinstance(content, str) and not (
            isinstance(content, list) and all(isinstance(block, dict) for block in content)
        ):
            raise BadRequest(f"{where}.content: must be a string or a list of content blocks")
        if message["role"] == "system":
            # A system turn inside the list (the current API version allows one) stays
            # where it is: chat providers read system messages anywhere.
            chat.append({"role": "system", "content": _text_blocks(content, f"{where}.content")})
        elif message["role"] == "user":
            chat.extend(_user_turn(content, f"{where}.content"))
        else:
            chat.append(_assistant_turn(content, f"{where}.content"))
    return chat


def _tools(body: JSON) -> list[JSON]:
    tools = body["tools"]
    if not isinstance(tools, list):
        raise BadRequest("tools: must be a list")
    functions: list[JSON] = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise BadRequest(f"{where}: must be an object")
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise BadRequest(
                f"{where}.type: server tool {kind!r} is not supported; define a custom tool "
                "(name, description, input_schema) instead"
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.name: required, a string")
        if not isinstance(schema, dict):
            raise BadRequest(f"{where}.input_schema: required, a JSON schema object")
        function: JSON = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    return functions


def _tool_choice(choice: Any, chat: JSON) -> None:
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice: must be an object with a type")
    kind = choice.get("type")
    if "tools" not in chat and kind != "none":
        raise BadRequest("tool_choice: requires tools")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        if "tools" in chat:
            chat["tool_choice"] = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t["function"]["name"] for t in chat["tools"]}:
            raise BadRequest("tool_choice.name: must name one of the tools")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise BadRequest("tool_choice.type: must be 'auto', 'any', 'tool' or 'none'")
    if choice.get("disable_parallel_tool_use") is True and "tools" in chat:
        chat["parallel_tool_calls"] = False


def _number(body: JSON, name: str, chat: JSON) -> None:
    value = body.get(name)
    if value is None:
        return
    if type(value) not in (int, float):
        raise BadRequest(f"{name}: must be a number")
    chat[name] = value


def to_chat(body: JSON) -> JSON:
    """The chat-completions body that serves a Messages request; a 400 names what cannot."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a field of the Messages API that Apiary serves")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: required, a string")
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"max_tokens: required, an integer from 1 to {MAX_TOKENS_LIMIT}")
    chat: JSON = {"model": model, "messages": _messages(body), "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        _number(body, name, chat)
    top_k = body.get("top_k")
    if top_k is not None:
        if type(top_k) is not int or top_k < 0:
            raise BadRequest("top_k: must be a non-negative integer")
        chat["top_k"] = top_k
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise BadRequest("stop_sequences: must be a list of non-empty strings")
        if stops:
            chat["stop"] = stops
    if body.get("tools"):
        chat["tools"] = _tools(body)
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise BadRequest("metadata: must be an object")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise BadRequest("metadata.user_id: must be a string")
        if user_id:
            chat["user"] = user_id
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest("stream: must be true or false")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict) or thinking.get("type") != "disabled"
    ):
        raise BadRequest("thinking: extended thinking is not supported (only type 'disabled')")
    if body.get("container") is not None:
        raise BadRequest("container: code-execution containers are not supported")
    _output_config(body.get("output_config"), chat)
    return chat


def _output_config(config: Any, chat: JSON) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise BadRequest("output_config: must be an object")
    if config.get("effort") is not None:
        raise BadRequest("output_config.effort: not supported")
    output_format = config.get("format")
    if output_format is None:
        return
    if (
        not isinstance(output_format, dict)
        or output_format.get("type") != "json_schema"
        or not isinstance(output_format.get("schema"), dict)
    ):
        raise BadRequest("output_config.format: must be {type: 'json_schema', schema: {...}}")
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": output_format["schema"]},
    }


def count_input(body: JSON) -> JSON:
    """The chat body a `count_tokens` request stands for (no max_tokens, no stream)."""
    return to_chat({**body, "max_tokens": 1, "stream": False})


# -- answers: chat → Anthropic -------------------------------------------------------------


def message_id(completion_id: Any) -> str:
    text = str(completion_id or "")
    if text.startswith("msg_"):
        return text
    tail = text.rsplit("-", 1)[-1] if text else ""
    return f"msg_{tail or uuid.uuid4().hex}"


def stop_reason(finish: Any, matched: Any, stops: list[str]) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` for a chat finish reason; `matched` is
    the stop string a provider reported in the choice's `stop_reason`, when it does."""
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(finish), "end_turn"), None


def usage(chat_usage: Any) -> JSON:
    chat_usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    cached = int((chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
    }


def _tool_input(arguments: Any) -> JSON:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def from_chat(document: JSON, stops: list[str]) -> JSON:
    """A chat completion as an Anthropic `message`."""
    choice = (document.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[JSON] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                "name": function.get("name", ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    if reply.get("tool_calls") and finish == "stop":
        finish = "tool_calls"  # some providers say stop even when the turn ends in calls
    reason, sequence = stop_reason(finish, choice.get("stop_reason"), stops)
    return {
        "id": message_id(document.get("id")),
        "type": "message",
        "role": "assistant",
        "model": document.get("model", ""),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(document.get("usage")),
    }


def sse(event: str, payload: JSON) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_TEXT_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_DELTA_MIDDLE = b',"delta":{"type":"text_delta","text":'
_TEXT_DELTA_TAIL = b"}}\n\n"


class MessageEvents:
    """Chat-completion chunks in, Anthropic stream events out (each an SSE frame).

    A block opens at its first delta and closes when the next begins: text, then one
    `tool_use` block per tool call, its arguments as `input_json_delta` fragments. The
    closing `message_delta` carries the stop reason and the usage (input tokens included:
    with chat providers they arrive only at the end, so `message_start` reports none)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.started = False
        self.block: int = -1  # the open block's index, -1 when none is open
        self.kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # chat tool_calls index → block index
        self.finish: Any = None
        self.matched: Any = None
        self.usage: Any = None
        self.output_deltas = 0

    def _start(self, chunk: JSON) -> Iterator[bytes]:
        self.started = True
        message = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        yield sse("message_start", {"type": "message_start", "message": message})
        yield sse("ping", {"type": "ping"})

    def _close(self) -> Iterator[bytes]:
        if self.block >= 0 and self.kind is not None:
            yield sse("content_block_stop", {"type": "content_block_stop", "index": self.block})
            self.kind = None

    def _open(self, block: JSON) -> Iterator[bytes]:
        yield from self._close()
        self.block += 1
        self.kind = block["type"]
        yield sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def feed(self, raw: bytes) -> Iterator[bytes]:
        chunk = orjson.loads(raw)
        if "error" in chunk and "choices" not in chunk:
            problem = chunk["error"] or {}
            message = str(problem.get("message") or "the provider failed mid-stream")
            yield sse("error", anthropic_error(502, message))
            return
        if not self.started:
            yield from self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.kind != "text":
                    yield from self._open({"type": "text", "text": ""})
                self.output_deltas += 1
                # The hot frame of a stream, put together without building its dict.
                yield b"".join(
                    (
                        _TEXT_DELTA_HEAD,
                        str(self.block).encode(),
                        _TEXT_DELTA_MIDDLE,
                        orjson.dumps(text),
                        _TEXT_DELTA_TAIL,
                    )
                )
            for call in delta.get("tool_calls") or []:
                yield from self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")

    def _tool_delta(self, call: JSON) -> Iterator[bytes]:
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        if position not in self.tool_blocks:
            yield from self._open(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                    "name": function.get("name", ""),
                    "input": {},
                }
            )
            self.tool_blocks[position] = self.block
        arguments = function.get("arguments")
        if arguments:
            self.output_deltas += 1
            yield sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self.tool_blocks[position],
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                },
            )

    def finish_events(self) -> Iterator[bytes]:
        if not self.started:
            yield from self._start({"id": "", "model": ""})
        yield from self._close()
        finish = self.finish
        if self.tool_blocks and finish == "stop":
            finish = "tool_calls"
        reason, sequence = stop_reason(finish or "stop", self.matched, self.stops)
        counted = usage(self.usage)
        if self.usage is None:
            counted["output_tokens"] = self.output_deltas  # one token per delta, at least
        yield sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": counted,
            },
        )
        yield sse("message_stop", {"type": "message_stop"})
