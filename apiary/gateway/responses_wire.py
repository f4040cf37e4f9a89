"""The OpenAI Responses API's wire format, translated to and from chat completions.

A `/v1/responses` request becomes one chat-completions body for the gateway's own call path
(so routing, fallback, cache, limits, budgets and the ledger are the chat call's), and its
answer, or its stream of chunks, becomes a `response` object or the Responses API's typed
event stream. Pure functions and one stream translator: no I/O, no storage.

Field names and event types follow OpenAI's API reference and openai-python's
`types/responses/`; what chat completions cannot express (built-in tools, files, background
runs) is refused with a 400 that names it, never dropped.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from apiary.errors import BadRequest

Item = dict[str, Any]

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_MAX_METADATA = 16
# Every field a request may hold. Some change nothing in a chat completion (include,
# service_tier, the prompt-cache hints) and are accepted because clients such as the Agents
# SDK send them; any other field is refused, as OpenAI refuses it.
_ACCEPTED = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens",
        "temperature", "top_p", "metadata", "stream", "store", "previous_response_id",
        "parallel_tool_calls", "user", "reasoning", "include", "truncation", "service_tier",
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "stream_options",
        "cache",
    }
)  # fmt: skip
_REFUSED = {
    "background": "background responses are not supported: leave background unset or false",
    "conversation": "conversations are not supported: continue with previous_response_id",
    "prompt": "stored prompt templates are not supported: send input and instructions",
    "max_tool_calls": "max_tool_calls applies to built-in tools, which are not supported",
    "context_management": "context_management is not supported",
    "top_logprobs": "token log-probabilities are not supported on responses",
}


def new_item_id(prefix: str) -> str:
    # Item ids name items within a response, which is found by its own id (a UUIDv7 from
    # the system's randomness), never by theirs: 128 bits of the process's generator
    # (reseeded in a forked child) make them unique without a system call each.
    return f"{prefix}_{random.getrandbits(128):032x}"


@dataclass(slots=True)
class ResponsesRequest:
    """A validated `/v1/responses` body; `items` are its input, normalized, with ids."""

    model: str
    items: list[Item]
    instructions: str | None = None
    tools: list[Item] = field(default_factory=list)
    tool_choice: Any = "auto"
    text_format: Item = field(default_factory=lambda: {"type": "text"})
    text: Item = field(default_factory=dict)
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    parallel_tool_calls: bool = True
    user: str | None = None
    reasoning: Item | None = None
    truncation: str = "disabled"
    passthrough: Item = field(default_factory=dict)  # chat parameters with the same meaning


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """Check a `/v1/responses` body; every problem is a `BadRequest` naming the field."""
    extra = body.keys() - _ACCEPTED
    if extra:
        for name in sorted(extra & _REFUSED.keys()):
            if body[name] not in (None, False):
                raise BadRequest(f"{name}: {_REFUSED[name]}")
        unknown = sorted(extra - _REFUSED.keys())
        if unknown:
            raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    include = body.get("include")
    if include is not None and (
        type(include) is not list or "message.output_text.logprobs" in include
    ):
        raise BadRequest("include: must be a list; message.output_text.logprobs is not supported")
    request = ResponsesRequest(model=body["model"], items=_input_items(body.get("input")))
    instructions = body.get("instructions")
    if instructions is not None and type(instructions) is not str:
        raise BadRequest("instructions: must be a string")
    request.instructions = instructions
    request.tools = _tools(body.get("tools"))
    request.tool_choice = _tool_choice(body.get("tool_choice"), request.tools)
    text = body.get("text")
    if text is not None:
        if type(text) is not dict:
            raise BadRequest("text: must be an object")
        request.text = text
        if text.get("format") is not None:
            request.text_format = _text_format(text["format"])
    request.max_output_tokens = _integer(body, "max_output_tokens", minimum=1)
    request.temperature = _number(body, "temperature", 0, 2)
    request.top_p = _number(body, "top_p", 0, 1)
    request.metadata = _metadata(body.get("metadata"))
    request.stream = _flag(body, "stream", default=False)
    request.store = _flag(body, "store", default=True)
    request.parallel_tool_calls = _flag(body, "parallel_tool_calls", default=True)
    previous = body.get("previous_response_id")
    if previous is not None and (type(previous) is not str or not previous):
        raise BadRequest("previous_response_id: must be a response id (resp_...)")
    request.previous_response_id = previous
    user = body.get("user")
    if user is not None and type(user) is not str:
        raise BadRequest("user: must be a string")
    request.user = user
    reasoning = body.get("reasoning")
    if reasoning is not None and type(reasoning) is not dict:
        raise BadRequest("reasoning: must be an object")
    request.reasoning = reasoning
    truncation = body.get("truncation")
    if truncation not in (None, "disabled", "auto"):
        raise BadRequest("truncation: must be auto or disabled")
    request.truncation = truncation or "disabled"
    if "cache" in body:
        request.passthrough["cache"] = body["cache"]  # Apiary's cache switch, as on chat
    return request


def _flag(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if type(value) is not bool:
        raise BadRequest(f"{name}: must be true or false")
    return value


def _integer(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is not None and (type(value) is not int or not minimum <= value <= 2**31 - 1):
        raise BadRequest(f"{name}: must be an integer from {minimum} to {2**31 - 1}")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) not in (int, float) or not low <= value <= high:
        raise BadRequest(f"{name}: must be a number from {low:g} to {high:g}")
    return float(value)


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict or len(value) > _MAX_METADATA:
        raise BadRequest(f"metadata: must be an object of at most {_MAX_METADATA} pairs")
    for key, text in value.items():
        if type(text) is not str or len(key) > 64 or len(text) > 512:
            raise BadRequest(
                f"metadata.{key}: values are strings of at most 512 characters, keys 64"
            )
    return value


# -- input ------------------------------------------------------------------------------------


def _input_items(value: object) -> list[Item]:
    if value is None:
        raise BadRequest("input: required, a string or a list of input items")
    if type(value) is str:
        return [_message("user", [{"type": "input_text", "text": value}])]
    if type(value) is not list:
        raise BadRequest("input: must be a string or a list of input items")
    return [_input_item(index, item) for index, item in enumerate(value)]


def _message(role: str, content: list[Item], item_id: str | None = None) -> Item:
    return {
        "id": item_id or new_item_id("msg"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


def _input_item(index: int, item: object) -> Item:
    where = f"input.{index}"
    if type(item) is not dict:
        raise BadRequest(f"{where}: must be an object")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise BadRequest(f"{where}.role: must be user, assistant, system or developer")
        return _message(role, _content(where, role, item.get("content")), item.get("id"))
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if type(item.get(name)) is not str:
                raise BadRequest(f"{where}.{name}: required, a string")
        return {
            "id": item.get("id") or new_item_id("fc"),
            "type": "function_call",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        if type(item.get("call_id")) is not str:
            raise BadRequest(f"{where}.call_id: required, a string")
        return {
            "id": item.get("id") or new_item_id("fco"),
            "type": "function_call_output",
            "call_id": item["call_id"],
            "output": _tool_output(where, item.get("output")),
            "status": "completed",
        }
    if kind == "reasoning":
        # Reasoning a model produced elsewhere has no chat-completions form; clients (the
        # Agents SDK) send it back with the turn, and the model does not need it to go on.
        return {**item, "id": item.get("id") or new_item_id("rs")}
    raise BadRequest(
        f"{where}.type: {kind!r} is not supported; input items are messages, "
        "function_call and function_call_output"
    )


def _content(where: str, role: str, content: object) -> list[Item]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if type(content) is str:
        part: Item = {"type": text_type, "text": content}
        if role == "assistant":
            part["annotations"] = []
        return [part]
    if type(content) is not list:
        raise BadRequest(f"{where}.content: must be a string or a list of content parts")
    parts: list[Item] = []
    for number, part in enumerate(content):
        kind = part.get("type") if type(part) is dict else None
        text = part.get("refusal" if kind == "refusal" else "text") if kind else None
        if kind in ("input_text", "output_text", "refusal") and type(text) is str:
            parts.append(part)
        elif kind == "input_image" and role != "assistant":
            if type(part.get("image_url")) is not str:
                raise BadRequest(
                    f"{where}.content.{number}.image_url: required (file ids are not supported)"
                )
            parts.append(part)
        else:
            raise BadRequest(
                f"{where}.content.{number}.type: {kind!r} is not supported; content parts are "
                "input_text, output_text, refusal and input_image with an image_url"
            )
    return parts


def _tool_output(where: str, output: object) -> str:
    if type(output) is str:
        return output
    if type(output) is list and all(
        type(p) is dict and p.get("type") in ("input_text", "output_text") for p in output
    ):
        return "".join(str(p.get("text", "")) for p in output)
    raise BadRequest(f"{where}.output: must be a string or a list of input_text parts")


# -- tools and formats ------------------------------------------------------------------------


def _tools(value: object) -> list[Item]:
    if value is None:
        return []
    if type(value) is not list or not all(type(tool) is dict for tool in value):
        raise BadRequest("tools: must be a list of tool objects")
    built_in = sorted({str(tool.get("type")) for tool in value if tool.get("type") != "function"})
    if built_in:
        raise BadRequest(
            f"tools: built-in tools are not supported: {', '.join(built_in)}; "
            "Apiary serves function tools ({type: function, name, parameters})"
        )
    for index, tool in enumerate(value):
        if type(tool.get("name")) is not str or not tool["name"]:
            raise BadRequest(f"tools.{index}.name: required, a string")
        parameters = tool.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            raise BadRequest(f"tools.{index}.parameters: must be a JSON schema object")
    return value


def _tool_choice(value: object, tools: list[Item]) -> Any:
    if value is None:
        return "auto"
    if type(value) is str and value in _TOOL_CHOICES:
        return value
    if type(value) is dict and value.get("type") == "function":
        name = value.get("name")
        if name not in {tool["name"] for tool in tools}:
            raise BadRequest(f"tool_choice.name: {name!r} is not one of the function tools")
        return value
    raise BadRequest(
        "tool_choice: must be none, auto, required or {type: function, name}; "
        "hosted tools are not supported"
    )


def _text_format(value: object) -> Item:
    kind = value.get("type") if type(value) is dict else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        assert type(value) is dict
        if type(value.get("name")) is not str or type(value.get("schema")) is not dict:
            raise BadRequest("text.format: json_schema needs a name and a schema object")
        return value
    raise BadRequest("text.format.type: must be text, json_object or json_schema")


# -- to chat completions ----------------------------------------------------------------------


def chat_body(request: ResponsesRequest, history: list[Item]) -> dict[str, Any]:
    """The chat-completions body that asks the same as `request`, continuing `history`
    (the earlier turns' items when it names a previous response)."""
    messages: list[Item] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in (*history, *request.items):
        _append_message(messages, item)
    if not messages:
        raise BadRequest("input: empty; nothing to answer")
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [_chat_tool(tool) for tool in request.tools]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice["name"]}}
            if type(choice) is dict
            else choice
        )
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    text_format = request.text_format
    if text_format["type"] == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif text_format["type"] == "json_schema":
        schema = {
            key: text_format[key]
            for key in ("name", "schema", "description", "strict")
            if text_format.get(key) is not None
        }
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.user is not None:
        body["user"] = request.user
    if request.reasoning and request.reasoning.get("effort"):
        body["reasoning_effort"] = request.reasoning["effort"]
    body.update(request.passthrough)
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _chat_tool(tool: Item) -> Item:
    function = {
        key: tool[key]
        for key in ("name", "description", "parameters", "strict")
        if tool.get(key) is not None
    }
    return {"type": "function", "function": function}


def _append_message(messages: list[Item], item: Item) -> None:
    kind = item["type"]
    if kind == "message":
        role = item["role"]
        parts = item["content"]
        if role == "assistant":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in parts)
            messages.append({"role": "assistant", "content": text})
        elif role in ("system", "developer"):
            text = "\n".join(p["text"] for p in parts if "text" in p)
            messages.append({"role": "system", "content": text})
        else:
            messages.append({"role": "user", "content": _user_content(parts)})
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        # Calls made in one turn (and the text before them) are one assistant message.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
            if not last.get("content"):
                last["content"] = None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append(
            {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
        )
    # reasoning items: see _input_item


def _user_content(parts: list[Item]) -> str | list[Item]:
    if len(parts) == 1 and "text" in parts[0]:
        return str(parts[0]["text"])
    content: list[Item] = []
    for part in parts:
        if part["type"] == "input_image":
            image: Item = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            content.append({"type": "image_url", "image_url": image})
        else:
            content.append({"type": "text", "text": part["text"]})
    return content


# -- from chat completions --------------------------------------------------------------------


def response_id(row_id: uuid.UUID) -> str:
    return f"resp_{row_id.hex}"


def row_id(response: str) -> uuid.UUID | None:
    """The stored row's id for a response id, or None if it cannot be one."""
    if not response.startswith("resp_"):
        return None
    try:
        return uuid.UUID(hex=response[5:])
    except ValueError:
        return None


def base_document(
    request: ResponsesRequest, *, identifier: str, created_at: int, model: str
) -> dict[str, Any]:
    """The `response` object before any output: what `response.created` carries."""
    text = {**request.text, "format": request.text_format}
    return {
        "id": identifier,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None, **(request.reasoning or {})},
        "store": request.store,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": text,
        "tool_choice": request.tool_choice,
        "tools": request.tools,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation,
        "usage": None,
        "user": request.user,
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    chat_usage = chat_usage or {}
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def finish(document: dict[str, Any], finish_reason: str | None) -> None:
    """Set the final status from the chat's finish reason."""
    reason = _INCOMPLETE.get(finish_reason or "")
    document["status"] = "incomplete" if reason else "completed"
    document["incomplete_details"] = {"reason": reason} if reason else None
    if reason is None:
        document["completed_at"] = int(time.time())


def completed_document(base: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """The finished `response` object for a chat completion."""
    document = {**base, "model": completion.get("model") or base["model"]}
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") in _INCOMPLETE else "completed"
    output: list[Item] = []
    parts: list[Item] = []
    if message.get("content"):
        parts.append(_output_text(message["content"]))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    calls = message.get("tool_calls") or []
    if parts or not calls:
        output.append({**_message("assistant", parts or [_output_text("")]), "status": status})
    for call in calls:
        function = call.get("function") or {}
        output.append(
            {
                "id": new_item_id("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": call.get("id") or new_item_id("call"),
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "",
            }
        )
    document["output"] = output
    document["usage"] = usage(completion.get("usage"))
    finish(document, choice.get("finish_reason"))
    return document


def _output_text(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


# -- streaming --------------------------------------------------------------------------------


class EventStream:
    """Turns a chat-completions chunk stream into the Responses API's events, each one an
    SSE event (`event:` and `data:` lines) with its `sequence_number`; `document` is the
    response as it stands (complete after `close`)."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.document = base
        self._sequence = 0
        self._open: Item | None = None  # the output item taking deltas
        self._calls: dict[int, Item] = {}  # chat tool-call index: its function_call item
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def open(self) -> list[bytes]:
        return [
            self._event("response.created", response=self.document),
            self._event("response.in_progress", response=self.document),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        if chunk.get("model"):
            self.document["model"] = chunk["model"]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 has no Responses form; parse_request never asks for it
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            if delta.get("refusal"):
                self._message_item(events)["_refusal"] += delta["refusal"]
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _message_item(self, events: list[bytes]) -> Item:
        if self._open is not None and self._open["type"] == "message":
            return self._open
        events += self._close_open()
        item = {**_message("assistant", []), "status": "in_progress"}
        output_index = len(self.document["output"])
        self.document["output"].append(item)
        events.append(
            self._event("response.output_item.added", output_index=output_index, item=item)
        )
        self._open = {
            "type": "message",
            "item": item,
            "index": output_index,
            "text": None,
            "_refusal": "",
        }
        return self._open

    def _text(self, delta: str) -> list[bytes]:
        events: list[bytes] = []
        state = self._message_item(events)
        item, index = state["item"], state["index"]
        if state["text"] is None:
            state["text"] = ""
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=_output_text(""),
                )
            )
        state["text"] += delta
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        state = self._calls.get(position)
        if state is None:
            events += self._close_open()
            item = {
                "id": new_item_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or new_item_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            output_index = len(self.document["output"])
            self.document["output"].append(item)
            state = {"type": "function_call", "item": item, "index": output_index}
            self._calls[position] = self._open = state
            events.append(
                self._event("response.output_item.added", output_index=output_index, item=item)
            )
        item = state["item"]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=state["index"],
                    delta=function["arguments"],
                )
            )
        return events

    def _close_open(self, status: str = "completed") -> list[bytes]:
        state, self._open = self._open, None
        if state is None:
            return []
        item, index = state["item"], state["index"]
        events: list[bytes] = []
        if state["type"] == "message":
            text = state["text"]
            if text is not None:
                part = _output_text(text)
                item["content"].append(part)
                events.append(
                    self._event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
                events.append(
                    self._event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=part,
                    )
                )
            if state["_refusal"]:
                item["content"].append({"type": "refusal", "refusal": state["_refusal"]})
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def close(self) -> list[bytes]:
        """The last events of a stream that ended: open items done, then the response."""
        incomplete = self._finish_reason in _INCOMPLETE
        events = self._close_open("incomplete" if incomplete else "completed")
        self.document["usage"] = usage(self._usage)
        finish(self.document, self._finish_reason)
        kind = "response.incomplete" if incomplete else "response.completed"
        events.append(self._event(kind, response=self.document))
        return events

    def fail(self, code: str, message: str) -> list[bytes]:
        """The last events of a stream the provider broke off."""
        events = self._close_open("incomplete")
        self.document["status"] = "failed"
        self.document["error"] = {"code": code, "message": message}
        self.document["usage"] = usage(self._usage)
        events.append(self._event("error", code=code, message=message, param=None))
        events.append(self._event("response.failed", response=self.document))
        return events
