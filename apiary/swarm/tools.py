"""The tools sub-agents may call, and the registry agents name them from.

A tool gets its tenant, execution and agent from `ToolContext`, which the engine builds;
the model only supplies the tool's own arguments, so it can never reach another tenant.
"""

from __future__ import annotations

import ast
import math
import operator
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from apiary.knowledge.deps import SearchDeps
from apiary.memory.store import MemoryDeps

if TYPE_CHECKING:
    from apiary.auth.context import AuthContext

KNOWLEDGE_TOP_K = 5


class ToolDeps(SearchDeps, MemoryDeps, Protocol):
    """What the tools need from their process: knowledge search and the thread's memory."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    deps: ToolDeps
    tenant_id: uuid.UUID
    execution_id: uuid.UUID
    agent_id: uuid.UUID | None
    thread_id: str | None
    auth: AuthContext | None = None  # the execution's caller: tools act as this principal
    knowledge_base_ids: tuple[uuid.UUID, ...] = ()  # the agent's attached knowledge bases
    # Citations (JSON dicts) of the passages `knowledge_search` returned, in order.
    sources: list[dict[str, Any]] = field(default_factory=list)


def unique_sources(sources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Citations in first-seen order, each passage (document and span) once."""
    seen: set[tuple[str, int, int]] = set()
    unique = []
    for source in sources:
        key = (str(source["document_id"]), int(source["char_start"]), int(source["char_end"]))
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique


class ToolError(Exception):
    """The tool could not do what the model asked; the message goes back to the model."""


ToolFunction = Callable[[ToolContext, dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    run: ToolFunction

    def spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


# -- calculator: arithmetic on an AST whitelist, never eval ---------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 1000
_MAX_LENGTH = 500


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError("exponent too large")
        result: float = _BINARY[type(node.op)](left, right)
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value: float = _UNARY[type(node.op)](_evaluate(node.operand))
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ToolError(f"unsupported expression element: {type(node).__name__}")


def calculate(expression: str) -> str:
    if len(expression) > _MAX_LENGTH:
        raise ToolError("expression too long")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as error:
        raise ToolError(f"not an arithmetic expression: {error.msg}") from None
    try:
        value = _evaluate(tree)
    except (ArithmeticError, ValueError, TypeError) as error:
        raise ToolError(str(error)) from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


async def _calculator(context: ToolContext, arguments: dict[str, Any]) -> str:
    return calculate(str(arguments.get("expression", "")))


# -- knowledge search: the agent's attached knowledge bases, as the execution's caller -------


async def _knowledge(context: ToolContext, arguments: dict[str, Any]) -> str:
    if not context.knowledge_base_ids:
        return "this agent has no knowledge bases attached"
    if context.auth is None:
        raise ToolError("knowledge search runs only inside an execution")
    query = str(arguments.get("query", "")).strip()
    if not query:
        raise ToolError("the query is empty")
    # Imported on first use: the knowledge service pulls in the vector store's client.
    from apiary.errors import ApiaryError
    from apiary.knowledge.service import passages_for_agent, search

    try:
        # The tenant comes from the execution's AuthContext, never from the model.
        hits = await search(
            context.deps, context.auth, context.knowledge_base_ids, query, KNOWLEDGE_TOP_K
        )
    except ApiaryError as error:
        raise ToolError(error.detail) from None
    context.sources.extend(hit.citation.model_dump(mode="json") for hit in hits)
    return passages_for_agent(hits)


# -- memory: the thread's earlier turns -----------------------------------------------------


async def _memory(context: ToolContext, arguments: dict[str, Any]) -> str:
    from apiary.memory.service import memory_service

    if context.thread_id is None or context.agent_id is None:
        return "this execution has no conversation thread"
    text = await memory_service.context_text(
        context.deps,
        tenant_id=context.tenant_id,
        agent_id=context.agent_id,
        thread_id=context.thread_id,
    )
    return text or "nothing remembered in this thread yet"


REGISTRY: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="calculator",
            description="Evaluate an arithmetic expression (+ - * / // % ** and sqrt, log, "
            "exp, sin, cos, tan, abs, round, min, max, pi, e).",
            parameters={
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
            run=_calculator,
        ),
        Tool(
            name="knowledge_search",
            description="Search the agent's knowledge bases for passages about a query; "
            "cite a passage you use by its number, like [1].",
            parameters={
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
            run=_knowledge,
        ),
        Tool(
            name="memory",
            description="Recall the earlier turns of this conversation thread.",
            parameters={"type": "object", "properties": {}},
            run=_memory,
        ),
    )
}
