"""Gateway configuration: providers, routes and price overrides, read from the YAML file.

```yaml
providers:
  - name: azure-east
    kind: azure_openai
    base_url: https://example.openai.azure.com
    api_key: env:AZURE_OPENAI_KEY     # read from the environment; never logged
    models: [gpt-4o, gpt-4o-mini]
routes:
  default: {models: [azure-east/gpt-4o, local/smollm2]}
prices:
  azure-east/gpt-4o: {input: 2.5, output: 10, cached_input: 1.25}
```
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ProviderKind = Literal[
    "openai", "azure_openai", "anthropic", "together", "moonshot", "openai_compatible", "local"
]
RoutePolicy = Literal["complexity", "context", "cost"]

# The bundled models, served when no provider is configured: a chat model and MiniLM,
# which serves /v1/embeddings (a `kind: local` provider may list `minilm` beside it).
LOCAL_MODEL = "local/smollm2"
LOCAL_EMBEDDING_MODEL = "local/minilm"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# Where each hosted kind lives when `base_url` is not given.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "together": "https://api.together.xyz/v1",
    "moonshot": "https://api.moonshot.ai/v1",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_secret(value: str | None) -> SecretStr | None:
    """`env:NAME` reads the variable (it must exist); anything else is the secret itself."""
    if value is None:
        return None
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return SecretStr(os.environ[name])
    return SecretStr(value)


class ProviderConfig(_Strict):
    name: str
    kind: ProviderKind
    base_url: str | None = None
    api_key: SecretStr | None = None
    models: list[str] = Field(min_length=1)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)  # queue beyond this
    rpm: int | None = Field(default=None, ge=1)  # requests per minute, queued beyond this
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)
    # Azure OpenAI: the API version, and model name → deployment name (default: the same).
    api_version: str = "2024-10-21"
    deployments: dict[str, str] = Field(default_factory=dict)
    # Azure AD instead of a key: a token from azure-identity's DefaultAzureCredential.
    azure_ad: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("lower-case letters, digits, '.', '_' and '-' only")
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        return resolve_secret(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs(self) -> ProviderConfig:
        if self.kind in ("azure_openai", "openai_compatible") and not self.base_url:
            raise ValueError(f"base_url is required for kind {self.kind}")
        if self.kind not in ("local", "openai_compatible") and not (self.api_key or self.azure_ad):
            raise ValueError(f"api_key is required for kind {self.kind}")
        return self

    @property
    def url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")).rstrip("/")


class RouteConfig(_Strict):
    policy: RoutePolicy | None = None
    models: list[str] = Field(default_factory=list)  # provider/model, in fallback order

    @model_validator(mode="after")
    def _one(self) -> RouteConfig:
        if self.policy is None and not self.models:
            raise ValueError("give a policy or a list of models")
        return self


class PriceConfig(_Strict):
    input: float = Field(ge=0)  # USD per 1M tokens
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, ge=1)


class GatewayConfig(_Strict):
    providers: list[ProviderConfig] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [p.name for p in self.providers]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"providers: duplicate names {', '.join(sorted(duplicates))}")
        known = {f"{p.name}/{m}" for p in self.providers for m in p.models}
        if not self.providers:
            known.update((LOCAL_MODEL, LOCAL_EMBEDDING_MODEL))
        for route, config in self.routes.items():
            unknown = [m for m in config.models if m not in known]
            if unknown:
                raise ValueError(
                    f"routes.{route}: unknown models {', '.join(unknown)} "
                    "(use provider/model with a configured provider)"
                )
        return self
