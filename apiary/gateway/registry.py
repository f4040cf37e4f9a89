"""Which adapter serves which provider kind. Adding a provider: its file, and a line here."""

from __future__ import annotations

from apiary.gateway.config import ProviderConfig
from apiary.gateway.http import HttpClient
from apiary.gateway.providers.anthropic import AnthropicProvider
from apiary.gateway.providers.azure_openai import AzureOpenAIProvider
from apiary.gateway.providers.base import Provider
from apiary.gateway.providers.openai import OpenAIProvider


def build_provider(config: ProviderConfig, http: HttpClient) -> Provider:
    if config.kind == "anthropic":
        return AnthropicProvider(config, http)
    if config.kind == "azure_openai":
        return AzureOpenAIProvider(config, http)
    if config.kind in ("openai", "together", "moonshot", "openai_compatible"):
        return OpenAIProvider(config, http)
    if config.kind == "local":
        from apiary.gateway.providers.local import LocalProvider

        return LocalProvider(config)
    raise ValueError(f"unknown provider kind {config.kind!r}")
