"""Model calls for the swarm: through the in-process gateway, charged to the execution.

Every call goes through the gateway client's `chat` with the execution's `AuthContext`, so the
ledger row carries the execution and agent, the tenant's limits apply, and the gateway
routes and falls back as for any other caller. The execution's own budget is checked
before each call: once spent, no further call is made.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from apiary.auth.context import AuthContext
from apiary.config import Settings
from apiary.gateway import catalog
from apiary.gateway.chain import ProviderChain
from apiary.gateway.client import ChatReply, ChatStream, GatewayClient
from apiary.gateway.providers.base import Usage
from apiary.gateway.router import Target


class CallDeps(Protocol):
    settings: Settings  # the swarm's default max_tokens
    client: GatewayClient  # the call itself: limits, routing, fallback, ledger
    providers: ProviderChain  # the price of a streamed call, whose cost no header carries


class BudgetStop(Exception):
    """The execution's budget is spent: no further model call is made."""


@dataclass
class Spend:
    """Money spent by one execution so far, against its budget (None: no cap)."""

    budget_usd: float | None
    cost_usd: float = 0.0
    stopped: bool = False  # a call was refused for the budget

    @property
    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.cost_usd >= self.budget_usd

    def check(self) -> None:
        if self.exhausted:
            self.stopped = True
            raise BudgetStop(f"budget of ${self.budget_usd} spent")


@dataclass
class Call:
    message: dict[str, Any]
    model: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def text(self) -> str:
        content = self.message.get("content")
        return content if isinstance(content, str) else ""


@dataclass
class Tally:
    """Tokens, cost and time of a group of calls (a phase, a sub-agent)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    tool_calls: int = 0
    models: list[str] = field(default_factory=list)

    def add(self, call: Call) -> None:
        self.prompt_tokens += call.prompt_tokens
        self.completion_tokens += call.completion_tokens
        self.cost_usd += call.cost_usd
        self.calls += 1
        if call.model and call.model not in self.models:
            self.models.append(call.model)


def _cost(headers: dict[str, str]) -> float:
    try:
        return float(headers.get("x-apiary-cost-usd", "0"))
    except ValueError:  # "unpriced"
        return 0.0


async def chat(
    deps: CallDeps,
    auth: AuthContext,
    spend: Spend,
    body: dict[str, Any],
    *,
    on_token: Callable[[str], Awaitable[None]] | None = None,
) -> Call:
    """One model call; with `on_token`, streamed, each content chunk passed to it."""
    spend.check()
    started = time.perf_counter()
    limit = deps.settings.swarm.max_tokens
    if limit is not None and "max_tokens" not in body:
        body = {**body, "max_tokens": limit}
    if on_token is not None:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    reply = await deps.client.chat(auth, body)
    if isinstance(reply, ChatReply):
        document = reply.json()
        usage = document.get("usage") or {}
        call = Call(
            message=document["choices"][0]["message"],
            model=reply.headers.get("x-apiary-model"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cost_usd=_cost(reply.headers),
        )
    else:
        call = await _collect(deps, reply, on_token)
    call.seconds = time.perf_counter() - started
    spend.cost_usd += call.cost_usd
    return call


async def _collect(
    deps: CallDeps, stream: ChatStream, on_token: Callable[[str], Awaitable[None]] | None
) -> Call:
    parts: list[str] = []
    tool_calls: dict[int, dict[str, Any]] = {}  # assembled from their deltas, by index
    usage: dict[str, Any] = {}
    try:
        async for chunk in stream.chunks:
            document = orjson.loads(chunk)
            if "error" in document:
                raise RuntimeError(str(document["error"].get("message", "stream failed")))
            usage = document.get("usage") or usage
            for choice in document.get("choices") or ():
                delta = choice.get("delta") or {}
                for piece in delta.get("tool_calls") or ():
                    _add_tool_call_delta(tool_calls, piece)
                text = delta.get("content")
                if text:
                    parts.append(text)
                    if on_token is not None:
                        await on_token(text)
    except BaseException:  # cancelled, or a failing `on_token`: end the upstream call now
        await stream.chunks.aclose()  # type: ignore[attr-defined]
        raise
    provider, model = stream.headers.get("x-apiary-provider"), stream.headers.get("x-apiary-model")
    counted = Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
    cost = None
    if provider and model:
        cost = catalog.cost_usd(deps.providers.price(Target(provider, model)), counted)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts) or None}
    if tool_calls:
        message["tool_calls"] = [tool_calls[index] for index in sorted(tool_calls)]
    elif message["content"] is None:
        message["content"] = ""
    return Call(
        message=message,
        model=model,
        prompt_tokens=counted.prompt_tokens,
        completion_tokens=counted.completion_tokens,
        cost_usd=cost or 0.0,
    )


def _add_tool_call_delta(calls: dict[int, dict[str, Any]], piece: dict[str, Any]) -> None:
    """Fold one streamed tool-call delta in: the first names the call, the rest append to
    its arguments (OpenAI's streaming format)."""
    if "index" in piece:
        index = int(piece["index"])
    elif calls and not piece.get("id"):
        index = max(calls)  # a provider that leaves the index out continues the last call
    else:
        index = len(calls)
    call = calls.setdefault(
        index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if piece.get("id"):
        call["id"] = piece["id"]
    function = piece.get("function") or {}
    if function.get("name"):
        call["function"]["name"] = function["name"]
    call["function"]["arguments"] += function.get("arguments") or ""
