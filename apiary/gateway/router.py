"""Turning the `model` a client sends into an ordered chain of (provider, model) targets.

`model` may be a route name from the config, `provider/model`, or a bare model name (every
provider that serves it, in config order). Route policies:

- `complexity`: score the request (see `complexity.py`); above 0.8 go to the best
  reasoning models (highest catalog tier); a prompt over 100K tokens goes to the
  longest-context models; anything else takes the `default` route.
- `context`: models whose context window holds the prompt plus the requested output,
  in default-chain order.
- `cost`: models that fit, cheapest first (unpriced models last).

Every decision carries a one-line reason, recorded in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apiary.gateway import catalog, complexity
from apiary.gateway.config import LOCAL_EMBEDDING_MODEL, GatewayConfig, RouteConfig
from apiary.kit import tokens

COMPLEX_THRESHOLD = 0.8
LONG_CONTEXT_TOKENS = 100_000
DEFAULT_OUTPUT_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Decision:
    route: str | None
    chain: tuple[Target, ...]
    reason: str


class UnknownModel(LookupError):
    pass


class Router:
    def __init__(self, config: GatewayConfig, provider_models: dict[str, list[str]]) -> None:
        self.config = config
        self.all_targets = tuple(
            Target(provider, model)
            for provider, models in provider_models.items()
            for model in models
        )
        self._by_key = {t.key: t for t in self.all_targets}
        # What a route with no model list chains: every model but the bundled embedder,
        # which only embeds (it is called by name, on /v1/embeddings).
        self.chat_targets = tuple(t for t in self.all_targets if t.key != LOCAL_EMBEDDING_MODEL)

    def names(self) -> list[str]:
        """Everything a client may send as `model`: routes, then provider/model ids."""
        routes = list(self.config.routes)
        if "default" not in routes:
            routes.append("default")
        return routes + [t.key for t in self.all_targets]

    def _info(self, target: Target) -> catalog.ModelInfo | None:
        return catalog.lookup(target.provider, target.model, overrides=self.config.prices)

    def _default_chain(self) -> tuple[Target, ...]:
        route = self.config.routes.get("default")
        if route is not None and route.models:
            return tuple(self._by_key[m] for m in route.models)
        return self.chat_targets

    def decide(self, model: str, request: dict[str, Any]) -> Decision:
        route = self.config.routes.get(model)
        if route is None and model == "default":
            route = RouteConfig(models=[t.key for t in self.chat_targets])
        if route is not None:
            return self._route(model, route, request)
        if model in self._by_key:
            return Decision(None, (self._by_key[model],), "explicit model")
        served = tuple(t for t in self.all_targets if t.model == model)
        if served:
            return Decision(None, served, f"model served by {len(served)} provider(s)")
        raise UnknownModel(model)

    def _route(self, name: str, route: RouteConfig, request: dict[str, Any]) -> Decision:
        if route.policy is None:
            chain = tuple(self._by_key[m] for m in route.models)
            return Decision(name, chain, "route chain")
        needed = tokens.count_messages(request.get("messages", [])) + int(
            request.get("max_completion_tokens")
            or request.get("max_tokens")
            or DEFAULT_OUTPUT_TOKENS
        )
        candidates = (
            tuple(self._by_key[m] for m in route.models) if route.models else self._default_chain()
        )
        fitting = tuple(t for t in candidates if self._fits(t, needed))
        if route.policy == "context":
            chain = fitting or self._longest(candidates)
            return Decision(name, chain, f"context: {needed} tokens fit {len(fitting)} model(s)")
        if route.policy == "cost":
            chain = tuple(sorted(fitting or candidates, key=self._price))
            return Decision(name, chain, f"cost: cheapest of {len(chain)} fitting model(s)")
        if needed > LONG_CONTEXT_TOKENS:
            return Decision(
                name, self._longest(candidates), f"complexity: long context ({needed} tokens)"
            )
        scored = complexity.score(request)
        if scored.value > COMPLEX_THRESHOLD:
            best = sorted(fitting or candidates, key=lambda t: -self._tier(t))
            top = self._tier(best[0])
            chain = tuple(t for t in best if self._tier(t) == top) + tuple(
                t for t in self._default_chain() if self._tier(t) != top
            )
            return Decision(name, chain, f"complexity {scored.value:.2f}: best reasoning model")
        chain = tuple(t for t in self._default_chain() if self._fits(t, needed)) or (
            self._default_chain()
        )
        return Decision(name, chain, f"complexity {scored.value:.2f}: default route")

    def _fits(self, target: Target, needed: int) -> bool:
        info = self._info(target)
        return info is None or info.context_window >= needed

    def _longest(self, candidates: tuple[Target, ...]) -> tuple[Target, ...]:
        return tuple(
            sorted(candidates, key=lambda t: -(i.context_window if (i := self._info(t)) else 0))
        )

    def _tier(self, target: Target) -> int:
        info = self._info(target)
        return info.tier if info else 0

    def _price(self, target: Target) -> tuple[int, float]:
        info = self._info(target)
        if info is None or info.input is None or info.output is None:
            return (1, 0.0)
        return (0, info.input + info.output)
