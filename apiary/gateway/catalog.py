"""The shipped price and context-window table, and the cost of one call.

Prices are public list prices in USD per 1M tokens, as of 2026-11 (OpenAI and Anthropic
from their pricing pages; Together and Moonshot checked against the LiteLLM price map
1.110.2). A `None` price means we do not know it: such calls are recorded as unpriced,
never as a silent $0. Operators correct or extend the table with `prices:` in the gateway
config (`provider/model: {input, output, cached_input, context_window}`).

How a model name is found (`lookup`), first match wins:

1. an override keyed `provider_name/model` (it may price a model the table lacks);
2. the table, by exact name (case-insensitive), then through `ALIASES`;
3. the name without one trailing snapshot tag: `-YYYY-MM-DD`, `-YYYYMMDD`, `-MMDD` or
   `-latest` (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-20250514` →
   `claude-sonnet-4`). A snapshot priced unlike its base is listed by its full name
   (`gpt-4o-2024-05-13`), so step 2 finds it first;
4. a deployment-style name that starts with a known model and a `-` or `_`
   (`gpt-4o-mini-prod` → `gpt-4o-mini`, the longest known prefix), unless what follows
   starts with a number (`claude-opus-4-5` is a newer model, not a deployment of
   `claude-opus-4`) or contains a word that names a differently priced variant
   (`VARIANT_WORDS`: `o3-pro`, `gpt-4o-audio-preview`, ...). Names that do not start
   with the model (`prod-gpt-4o`) are not guessed: configure a price override.

`tier` ranks capability for the complexity router: 0 tiny or local, 1 small and fast,
2 strong general-purpose, 3 the best reasoning models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from apiary.gateway.config import PriceConfig
from apiary.gateway.providers.base import Usage


@dataclass(frozen=True, slots=True)
class ModelInfo:
    input: float | None  # USD per 1M prompt tokens; None = unpriced
    output: float | None  # USD per 1M completion tokens
    cached_input: float | None  # USD per 1M prompt tokens read from the provider's cache
    context_window: int  # the most prompt tokens the model accepts
    tier: int  # 0 tiny/local .. 3 best reasoning


# A model known only through a price override gets these: a small window is the safe guess.
DEFAULT_CONTEXT_WINDOW = 8192
DEFAULT_TIER = 1


def _m(
    input: float | None,
    output: float | None,
    cached_input: float | None,
    context_window: int,
    tier: int,
) -> ModelInfo:
    return ModelInfo(input, output, cached_input, context_window, tier)


# fmt: off
MODELS: dict[str, ModelInfo] = {
    # --- OpenAI (also Azure OpenAI). cached_input is the prompt-caching price.
    "gpt-4o":                  _m(2.50, 10.00, 1.25, 128_000, 2),
    "gpt-4o-2024-05-13":       _m(5.00, 15.00, None, 128_000, 2),  # first snapshot, dearer
    "gpt-4o-mini":             _m(0.15, 0.60, 0.075, 128_000, 1),
    "gpt-4.1":                 _m(2.00, 8.00, 0.50, 1_047_576, 2),
    "gpt-4.1-mini":            _m(0.40, 1.60, 0.10, 1_047_576, 1),
    "gpt-4.1-nano":            _m(0.10, 0.40, 0.025, 1_047_576, 0),
    "o3":                      _m(2.00, 8.00, 0.50, 200_000, 3),
    "o3-mini":                 _m(1.10, 4.40, 0.55, 200_000, 2),
    "o3-pro":                  _m(20.00, 80.00, None, 200_000, 3),
    "o4-mini":                 _m(1.10, 4.40, 0.275, 200_000, 2),
    "gpt-5":                   _m(1.25, 10.00, 0.125, 272_000, 3),  # 400K incl. output
    "gpt-5-mini":              _m(0.25, 2.00, 0.025, 272_000, 2),
    "gpt-5-nano":              _m(0.05, 0.40, 0.005, 272_000, 1),
    "gpt-5-chat-latest":       _m(1.25, 10.00, 0.125, 128_000, 2),  # smaller window
    "gpt-5-pro":               _m(15.00, 120.00, None, 272_000, 3),
    "text-embedding-3-small":  _m(0.02, 0.0, None, 8191, 0),  # embeddings have no output
    "text-embedding-3-large":  _m(0.13, 0.0, None, 8191, 0),
    # --- Anthropic. cached_input is the cache-read price; cache writes (1.25x input) are
    # not in Usage yet and are billed as ordinary input.
    "claude-opus-4":           _m(15.00, 75.00, 1.50, 200_000, 3),
    "claude-opus-4-1":         _m(15.00, 75.00, 1.50, 200_000, 3),
    "claude-opus-4-5":         _m(5.00, 25.00, 0.50, 200_000, 3),
    "claude-sonnet-4":         _m(3.00, 15.00, 0.30, 200_000, 2),
    "claude-sonnet-4-5":       _m(3.00, 15.00, 0.30, 200_000, 3),
    "claude-haiku-4-5":        _m(1.00, 5.00, 0.10, 200_000, 1),
    "claude-3-5-haiku":        _m(0.80, 4.00, 0.08, 200_000, 1),
    # --- Together (serverless ids as Together spells them).
    "meta-llama/Llama-3.2-3B-Instruct-Turbo":       _m(0.06, 0.06, None, 131_072, 0),
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo":  _m(0.18, 0.18, None, 131_072, 0),
    "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo": _m(0.88, 0.88, None, 131_072, 1),
    "meta-llama/Llama-3.3-70B-Instruct-Turbo":      _m(1.04, 1.04, None, 131_072, 1),
    "Qwen/Qwen2.5-7B-Instruct-Turbo":               _m(0.30, 0.30, None, 32_768, 0),
    "Qwen/Qwen2.5-72B-Instruct-Turbo":              _m(1.20, 1.20, None, 131_072, 1),
    "Qwen/Qwen3-Next-80B-A3B-Instruct":             _m(0.15, 1.50, None, 262_144, 1),
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8":      _m(2.00, 2.00, None, 262_144, 2),
    "deepseek-ai/DeepSeek-V3":                      _m(1.25, 1.25, None, 65_536, 2),
    "deepseek-ai/DeepSeek-V3.1":                    _m(0.60, 1.70, None, 131_072, 2),
    "deepseek-ai/DeepSeek-R1":                      _m(3.00, 7.00, None, 163_840, 3),
    "openai/gpt-oss-120b":                          _m(0.15, 0.60, None, 131_072, 2),
    # --- Moonshot (Kimi), 256K+ windows. A Kimi id we cannot vouch for gets no entry, so
    # its calls show as unpriced; add it here or in `prices:` once its price is published.
    "kimi-k2.5":               _m(0.60, 3.00, 0.10, 262_144, 2),
    "kimi-k2.6":               _m(0.95, 4.00, 0.16, 262_144, 2),
    "kimi-k3":                 _m(3.00, 15.00, 0.30, 1_048_576, 3),
    # --- The bundled local model: genuinely free.
    "smollm2":                 _m(0.0, 0.0, 0.0, 8192, 0),
    "minilm":                  _m(0.0, 0.0, 0.0, 8192, 0),  # takes any text, embeds 256 pieces
}
# fmt: on

# Published alternative names that the suffix rules cannot derive.
ALIASES: dict[str, str] = {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
}

# A deployment-name remainder with one of these words is a different model, priced apart.
# fmt: off
VARIANT_WORDS = frozenset({
    "pro", "mini", "nano", "audio", "realtime", "search", "transcribe", "tts", "image",
    "vision", "deep", "research", "free", "tput", "turbo", "fast", "highspeed",
})
# fmt: on

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")
_SEPARATOR = re.compile(r"[-_.]")

_INDEX: dict[str, ModelInfo] = {name.lower(): info for name, info in MODELS.items()}
_INDEX.update({alias: MODELS[target] for alias, target in ALIASES.items()})
# Longest first, so `gpt-4o-mini-prod` finds `gpt-4o-mini` before `gpt-4o`.
_PREFIXES = sorted(_INDEX, key=len, reverse=True)


def lookup(
    provider_name: str, model: str, *, overrides: Mapping[str, PriceConfig]
) -> ModelInfo | None:
    """The price and window of `model` served by `provider_name`; None when unknown."""
    known = _find(model)
    override = overrides.get(f"{provider_name}/{model}")
    if override is None:
        return known
    # The override's prices replace all three (an absent cached_input bills at input).
    return ModelInfo(
        input=override.input,
        output=override.output,
        cached_input=override.cached_input,
        context_window=override.context_window
        or (known.context_window if known else DEFAULT_CONTEXT_WINDOW),
        tier=known.tier if known else DEFAULT_TIER,
    )


@lru_cache(maxsize=4096)
def _find(model: str) -> ModelInfo | None:
    name = model.strip().lower()
    if name in _INDEX:
        return _INDEX[name]
    base = _SNAPSHOT.sub("", name)
    if base in _INDEX:
        return _INDEX[base]
    for known in _PREFIXES:
        if len(base) > len(known) + 1 and base.startswith(known) and base[len(known)] in "-_":
            words = _SEPARATOR.split(base[len(known) + 1 :])
            if words[0].isdigit() or VARIANT_WORDS.intersection(words):
                return None
            return _INDEX[known]
    return None


def cost_usd(info: ModelInfo | None, usage: Usage) -> float | None:
    """What the call cost in USD, or None when the model is unpriced."""
    if info is None or info.input is None or info.output is None:
        return None
    cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
    cached_price = info.input if info.cached_input is None else info.cached_input
    return (
        (usage.prompt_tokens - cached) * info.input
        + cached * cached_price
        + usage.completion_tokens * info.output
    ) / 1_000_000
