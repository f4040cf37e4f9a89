"""Function calling on the bundled chat model, by grammar-constrained output.

SmolLM2's chat template knows nothing of tools, and a 135M model would not keep a tool-call
format by itself. So the tools are described in a system message, and llama.cpp samples
under a grammar (from a JSON schema) that admits only a valid call: `{"name": <one of the
tools>, "arguments": <that tool's parameters schema>}`, or with `tool_choice: auto` also
`{"content": "<a plain answer>"}`; a named `tool_choice` samples the arguments object alone.
What comes out therefore parses, names a real tool and matches its schema (objects get
`additionalProperties: false` unless the schema says otherwise, so no invented keys). The
grammar cannot express numeric bounds: a small integer range is sampled as an enum, and
any other bounded number is brought inside its bounds after sampling.

With `tool_choice: auto`, once the last message is a tool result the model answers in text:
the tiny model otherwise tends to call tools again and again, and an agent loop on it would
never end. Earlier calls in the history are shown to the model in the same JSON form.
"""

from __future__ import annotations

import copy
import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from apiary.gateway.providers.base import JSON, ProviderError

Mode = Literal["named", "required", "auto"]


def _refused(message: str) -> ProviderError:
    return ProviderError("client", message, status=400)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one request's tools are offered: the schema the output must match, and the
    instructions the model reads."""

    mode: Mode
    functions: tuple[JSON, ...]  # each {"name", "description"?, "parameters"}
    schema: JSON
    instructions: str


MAX_ENUMERATED = 256  # an integer range up to this size is sampled as an enum


def _bounds(node: JSON) -> tuple[float | None, float | None]:
    """The inclusive bounds of a numeric schema (draft 4's boolean exclusives included)."""
    low, high = node.get("minimum"), node.get("maximum")
    exclusive_low, exclusive_high = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    integer = node.get("type") == "integer"

    def above(bound: float) -> float:
        return bound + 1 if integer else math.nextafter(bound, math.inf)

    def below(bound: float) -> float:
        return bound - 1 if integer else math.nextafter(bound, -math.inf)

    if isinstance(exclusive_low, int | float) and not isinstance(exclusive_low, bool):
        low = above(exclusive_low) if low is None else max(low, above(exclusive_low))
    elif exclusive_low is True and low is not None:
        low = above(low)
    if isinstance(exclusive_high, int | float) and not isinstance(exclusive_high, bool):
        high = below(exclusive_high) if high is None else min(high, below(exclusive_high))
    elif exclusive_high is True and high is not None:
        high = below(high)
    return low, high


def _closed(schema: JSON) -> JSON:
    """`schema` as the grammar can hold output to it: objects closed to unknown keys where it
    leaves that open, and small integer ranges as enums (llama.cpp's schema converter has no
    minimum or maximum; larger ranges and bounded numbers are clamped after sampling)."""
    closed = copy.deepcopy(schema)
    stack: list[Any] = [closed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and "additionalProperties" not in node:
                node["additionalProperties"] = False
            if node.get("type") == "integer" and "enum" not in node:
                low, high = _bounds(node)
                if low is not None and high is not None and 0 <= high - low < MAX_ENUMERATED:
                    node["enum"] = list(range(int(low), int(high) + 1))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return closed


def _clamped(value: Any, schema: Any) -> Any:
    """`value` with numbers brought inside their schema's bounds, through objects and arrays."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        return {key: _clamped(item, properties.get(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_clamped(item, schema.get("items")) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = _bounds(schema)
        if low is not None and value < low:
            value = int(low) if schema.get("type") == "integer" else low
        if high is not None and value > high:
            value = int(high) if schema.get("type") == "integer" else high
    return value


def _functions(tools: Any) -> tuple[JSON, ...]:
    if not isinstance(tools, list) or not tools:
        raise _refused("tools: must be a non-empty list")
    functions = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise _refused(f"tools.{index}.type: the local model calls function tools only")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _refused(f"tools.{index}.function.name: required, a string")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise _refused(f"tools.{index}.function.parameters: must be a JSON schema object")
        functions.append(
            {
                "name": function["name"],
                "description": str(function.get("description") or ""),
                "parameters": _closed(parameters),
            }
        )
    return tuple(functions)


def _describe(functions: tuple[JSON, ...], mode: Mode) -> str:
    lines = ["You can call these tools:"]
    for function in functions:
        parameters = orjson.dumps(function["parameters"]).decode()
        lines.append(f"- {function['name']}: {function['description']} Arguments: {parameters}")
    if mode == "named":
        lines.append(f"Answer with the JSON arguments for {functions[0]['name']} only.")
    else:
        lines.append('To call a tool, answer {"name": "<tool>", "arguments": {...}}.')
        if mode == "auto":
            lines.append('To answer without a tool, answer {"content": "<your answer>"}.')
    return "\n".join(lines)


def plan(request: JSON) -> ToolPlan | None:
    """The plan for a request's `tools` and `tool_choice`; None when no tool is offered."""
    tools = request.get("tools")
    choice = request.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise _refused("tool_choice: requires tools")
        return None
    functions = _functions(tools)
    if choice is None or choice == "auto":
        messages = request.get("messages") or []
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
            return None  # answer the tool results (see the module docstring)
        mode: Mode = "auto"
    elif choice == "none":
        return None
    elif choice == "required":
        mode = "required"
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
    ):
        name = choice["function"].get("name")
        chosen = [f for f in functions if f["name"] == name]
        if not chosen:
            raise _refused(f"tool_choice.function.name: {name!r} is not one of the tools")
        functions, mode = (chosen[0],), "named"
    else:
        raise _refused(
            "tool_choice: the local model takes 'auto', 'none', 'required' or "
            '{"type": "function", "function": {"name": ...}}'
        )
    if mode == "named":
        schema = functions[0]["parameters"]
    else:
        calls: list[JSON] = [
            {
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for f in functions
        ]
        if mode == "auto":
            calls.append(
                {
                    "type": "object",
                    "properties": {"content": {"type": "string"}},
                    "required": ["content"],
                    "additionalProperties": False,
                }
            )
        schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return ToolPlan(mode, functions, schema, _describe(functions, mode))


def history_text(tool_calls: Any) -> str:
    """An assistant turn's earlier calls, in the form the model is asked to answer in."""
    shown = []
    for call in tool_calls if isinstance(tool_calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = function.get("arguments")
        shown.append(orjson.dumps({"name": function.get("name"), "arguments": arguments}).decode())
    return "\n".join(shown)


def reply(plan: ToolPlan, text: str) -> tuple[str | None, list[JSON]]:
    """The message content and tool calls that the constrained output stands for. Output cut
    short (max_tokens) does not parse: it is returned as text, and the finish reason says
    `length`."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, []
    if plan.mode == "named":
        name, arguments = plan.functions[0]["name"], parsed
    elif isinstance(parsed, dict) and "content" in parsed and "name" not in parsed:
        return str(parsed["content"]), []
    elif isinstance(parsed, dict):
        name, arguments = parsed.get("name"), parsed.get("arguments")
    else:
        return text, []
    function = next((f for f in plan.functions if f["name"] == name), None)
    if function is not None:
        arguments = _clamped(arguments, function["parameters"])
    call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }
    return None, [call]
