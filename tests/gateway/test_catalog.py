"""The shipped price table: lookups, overrides and the cost of a call."""

from __future__ import annotations

import pytest

from apiary.gateway.catalog import MODELS, ModelInfo, cost_usd, lookup
from apiary.gateway.config import PriceConfig
from apiary.gateway.providers.base import Usage

NO_OVERRIDES: dict[str, PriceConfig] = {}


def test_known_model_has_its_list_price() -> None:
    info = lookup("openai", "gpt-4o", overrides=NO_OVERRIDES)
    assert info == ModelInfo(
        input=2.5, output=10.0, cached_input=1.25, context_window=128_000, tier=2
    )


def test_override_wins_over_the_table() -> None:
    overrides = {"azure-east/gpt-4o": PriceConfig(input=2.0, output=8.0, context_window=64_000)}
    info = lookup("azure-east", "gpt-4o", overrides=overrides)
    assert info is not None
    assert (info.input, info.output, info.cached_input) == (2.0, 8.0, None)
    assert info.context_window == 64_000
    assert info.tier == MODELS["gpt-4o"].tier
    # Another provider serving the same model still gets the table's price.
    assert lookup("openai", "gpt-4o", overrides=overrides) == MODELS["gpt-4o"]


def test_override_prices_a_model_the_table_lacks() -> None:
    overrides = {"vllm/my-finetune": PriceConfig(input=0.5, output=1.5)}
    info = lookup("vllm", "my-finetune", overrides=overrides)
    assert info is not None
    assert (info.input, info.output) == (0.5, 1.5)
    assert info.context_window == 8192
    assert lookup("other", "my-finetune", overrides=overrides) is None


def test_unknown_model_is_unpriced_not_free() -> None:
    info = lookup("openai", "gpt-99-ultra", overrides=NO_OVERRIDES)
    assert info is None
    assert cost_usd(info, Usage(prompt_tokens=1000, completion_tokens=1000)) is None


def test_model_without_a_published_price_is_unpriced() -> None:
    info = ModelInfo(input=None, output=None, cached_input=None, context_window=262_144, tier=2)
    assert cost_usd(info, Usage(prompt_tokens=10, completion_tokens=10)) is None


def test_cost_arithmetic_with_cached_tokens() -> None:
    info = lookup("openai", "gpt-4o", overrides=NO_OVERRIDES)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000, cached_tokens=400_000)
    # 600k uncached at $2.50/M + 400k cached at $1.25/M + 100k out at $10/M
    assert cost_usd(info, usage) == pytest.approx(1.50 + 0.50 + 1.00)


def test_cached_tokens_bill_at_input_when_no_cached_price() -> None:
    info = ModelInfo(input=1.0, output=2.0, cached_input=None, context_window=1000, tier=1)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=800)
    assert cost_usd(info, usage) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1_000_000)


def test_local_model_is_genuinely_free() -> None:
    info = lookup("local", "smollm2", overrides=NO_OVERRIDES)
    assert info is not None
    assert info.context_window == 8192
    assert cost_usd(info, Usage(prompt_tokens=5000, completion_tokens=500)) == 0.0


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-R1"),
        ("GPT-4o", "gpt-4o"),
        # Azure deployment names that start with the model.
        ("gpt-4o-mini-prod", "gpt-4o-mini"),
        ("gpt-4.1_eastus", "gpt-4.1"),
        ("text-embedding-3-large-eu", "text-embedding-3-large"),
    ],
)
def test_snapshot_and_deployment_names_find_the_base_model(name: str, base: str) -> None:
    assert lookup("p", name, overrides=NO_OVERRIDES) == MODELS[base]


def test_a_dated_snapshot_priced_apart_keeps_its_own_price() -> None:
    info = lookup("openai", "gpt-4o-2024-05-13", overrides=NO_OVERRIDES)
    assert info is not None
    assert info.input == 5.0


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-audio-preview",  # a variant priced differently
        "gpt-4o-mini-tts",
        "o4-mini-deep-research",
        "claude-opus-4-6",  # a newer version, not a deployment of claude-opus-4
        "gpt-5.1",
        "prod-gpt-4o",  # does not start with the model
        "chatgpt-4o-latest",
    ],
)
def test_names_that_could_be_mispriced_are_unpriced(name: str) -> None:
    assert lookup("p", name, overrides=NO_OVERRIDES) is None


def test_pro_variants_are_not_priced_as_their_base() -> None:
    assert lookup("openai", "o3-pro", overrides=NO_OVERRIDES) == MODELS["o3-pro"]
    assert lookup("openai", "gpt-5-pro-2025-10-06", overrides=NO_OVERRIDES) == MODELS["gpt-5-pro"]


def test_the_table_covers_every_provider_and_is_sane() -> None:
    for name in (
        "gpt-4.1-nano",
        "o3",
        "gpt-5-nano",
        "text-embedding-3-small",
        "claude-haiku-4-5",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
        "kimi-k2.5",
        "kimi-k2.6",
        "kimi-k3",
    ):
        assert name in MODELS
    for name, info in MODELS.items():
        assert 0 <= info.tier <= 3, name
        assert info.context_window >= 8191, name
        if name.startswith("kimi-"):
            assert info.context_window >= 256_000, name
        for price in (info.input, info.output, info.cached_input):
            assert price is None or price >= 0, name
        if info.cached_input is not None and info.input is not None:
            assert info.cached_input <= info.input, name
