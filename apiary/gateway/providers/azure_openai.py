"""Azure OpenAI: OpenAI's wire format at per-deployment URLs, with an `api-version` and
either an `api-key` or an Azure AD bearer token (from azure-identity)."""

from __future__ import annotations

import os
from typing import Any

from apiary.gateway.config import ProviderConfig
from apiary.gateway.http import HttpClient
from apiary.gateway.providers.base import ProviderError
from apiary.gateway.providers.openai import OpenAIProvider

_AAD_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureOpenAIProvider(OpenAIProvider):
    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        super().__init__(config, http)
        self._credential: Any = None

    def url(self, model: str, path: str) -> str:
        deployment = self.config.deployments.get(model, model)
        return (
            f"{self.config.url}/openai/deployments/{deployment}/{path}"
            f"?api-version={self.config.api_version}"
        )

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.config.api_key is not None:
            headers["api-key"] = self.config.api_key.get_secret_value()
        return headers

    async def auth_headers(self) -> dict[str, str]:
        headers = self.headers()
        if self.config.azure_ad:
            headers["authorization"] = f"Bearer {await self._aad_token()}"
        return headers

    async def aclose(self) -> None:
        """Close the credential's HTTP session, if one was opened."""
        credential, self._credential = self._credential, None
        if credential is not None:
            await credential.close()

    async def _aad_token(self) -> str:
        # azure-identity caches the token and refreshes it before expiry.
        if self._credential is None:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError:
                raise ProviderError(
                    "auth",
                    "azure_ad: true needs the azure-identity package (pip install 'apiary[azure]')",
                    provider=self.config.name,
                ) from None
            options: dict[str, Any] = {}
            # azure-core's aiohttp transport ignores SSL_CERT_FILE once aiohttp is imported
            # (aiohttp builds its default TLS context at import), so hand the bundle over.
            ca_file = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
            if ca_file:
                options["connection_verify"] = ca_file
            self._credential = DefaultAzureCredential(**options)
        from azure.core.exceptions import AzureError

        try:
            token = await self._credential.get_token(_AAD_SCOPE)
        except AzureError as exc:
            # The message names the credentials tried and the token endpoint's error code
            # (e.g. AADSTS7000215); it never carries the secret or a token.
            reason = " ".join(str(exc.message or type(exc).__name__).split())[:400]
            raise ProviderError(
                "auth", f"Azure AD token request failed: {reason}", provider=self.config.name
            ) from None
        return str(token.token)
