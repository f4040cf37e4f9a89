"""A sub-agent's model loop: call the model, run the tools it asks for, until it answers or
its steps run out."""

from __future__ import annotations

from typing import Any

import orjson

from apiary.executions.event_types import ToolCalled
from apiary.observability import tracing
from apiary.swarm.calls import Call, Tally, chat
from apiary.swarm.context import SwarmContext
from apiary.swarm.progress import TokenStream
from apiary.swarm.prompts import SUBAGENT_PROMPT, system_prompt, with_background
from apiary.swarm.tools import REGISTRY, ToolContext, ToolError


async def tool_loop(
    context: SwarmContext,
    index: int,
    prompt: str,
    tally: Tally,
    sources: list[dict[str, Any]],
    output: TokenStream,
) -> str:
    """Call the model, run the tools it asks for, until it answers or the steps run out.

    The citations of the knowledge-base passages its tools returned go to `sources`; the
    answer's last streamed text is left in `output` for the caller's next event."""
    agent = context.agent
    allowed = [REGISTRY[name] for name in agent.tools if name in REGISTRY]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(agent, SUBAGENT_PROMPT)},
        {"role": "user", "content": with_background(context.background, prompt)},
    ]
    tool_context = ToolContext(
        deps=context.deps,
        tenant_id=context.scope.tenant_id,
        execution_id=context.execution_id,
        agent_id=context.auth.agent_id,
        thread_id=context.thread_id,
        auth=context.auth,
        knowledge_base_ids=tuple(agent.knowledge_base_ids),
        sources=sources,
    )
    last: Call | None = None
    for _ in range(context.max_steps):
        body: dict[str, Any] = {
            "model": agent.model,
            "temperature": agent.temperature,
            "messages": messages,
        }
        if allowed:
            body["tools"] = [tool.spec() for tool in allowed]
        last = await chat(context.deps, context.auth, context.spend, body, on_token=output.add)
        tally.add(last)
        calls = last.message.get("tool_calls") or []
        if not calls:
            return last.text
        await output.flush()  # what the model said before its tool calls, shown now
        messages.append(
            {"role": "assistant", "content": last.message.get("content"), "tool_calls": calls}
        )
        for tool_call in calls:
            function = tool_call.get("function") or {}
            name = str(function.get("name"))
            result = await run_tool(tool_context, name, function.get("arguments") or "{}")
            tally.tool_calls += 1
            await context.events.emit(ToolCalled(subtask=index, tool=name, output=result[:500]))
            messages.append(
                {"role": "tool", "tool_call_id": tool_call.get("id"), "content": result}
            )
    raise ToolError(f"no answer within the step limit of {context.max_steps} model calls")


async def run_tool(tool_context: ToolContext, name: str, arguments: str) -> str:
    """A tool's answer to the model, or what went wrong as `error: ...` for it to read."""
    # Named as the GenAI conventions name a tool call.
    with tracing.span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ) as span:
        result = await _tool(tool_context, name, arguments)
        if span is not None and result.startswith("error: "):
            tracing.record_error(span, "tool_error")
        return result


async def _tool(tool_context: ToolContext, name: str, arguments: str) -> str:
    tool = REGISTRY.get(name)
    if tool is None:
        return f"error: no tool named {name!r}"
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return "error: the arguments were not valid JSON"
    if not isinstance(parsed, dict):
        return "error: the arguments must be a JSON object"
    try:
        return await tool.run(tool_context, parsed)
    except ToolError as error:
        return f"error: {error}"
