"""Key-encryption keys (KEKs): what wraps each tenant's data keys.

Two sources, either or both:

- keys from the environment (`APIARY_ENCRYPTION__KEK`, `…__PREVIOUS_KEKS`), each with an id
  (`kid:base64-of-32-bytes`); wrapping is AES Key Wrap (RFC 3394);
- an Azure Key Vault key (`APIARY_ENCRYPTION__KEY_VAULT_KEY_ID`), through azure-keyvault-keys'
  `CryptographyClient` (RSA-OAEP-256): the key never leaves the vault, and every version of
  the key stays usable for unwrapping after the vault rotates it.

A wrapped data key is stored with the id of the KEK that wrapped it (the local kid, or the
Key Vault key's versioned identifier), so a row names exactly which key it needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from apiary.crypto.errors import CiphertextInvalid, EncryptionKeyUnavailable

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.keyvault.keys.crypto.aio import CryptographyClient

    from apiary.config import EncryptionSettings

CONFIGURE = "APIARY_ENCRYPTION__KEK or APIARY_ENCRYPTION__KEY_VAULT_KEY_ID"


@dataclass(frozen=True, slots=True)
class Wrapped:
    kek_id: str
    wrapped: bytes


class KeyWrapper(Protocol):
    """One source of KEKs."""

    def holds(self, kek_id: str) -> bool: ...

    async def wrap(self, data_key: bytes) -> Wrapped: ...

    async def unwrap(self, kek_id: str, wrapped: bytes) -> bytes: ...

    async def close(self) -> None: ...


@dataclass
class LocalKeks:
    """KEKs from the environment: the first wraps, every one unwraps."""

    keys: dict[str, bytes]  # kid -> 32 bytes, the active one first

    @property
    def active_kid(self) -> str:
        return next(iter(self.keys))

    def holds(self, kek_id: str) -> bool:
        return kek_id in self.keys

    async def wrap(self, data_key: bytes) -> Wrapped:
        kid = self.active_kid
        return Wrapped(kid, aes_key_wrap(self.keys[kid], data_key))

    async def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self.keys[kek_id], wrapped)
        except InvalidUnwrap:
            raise CiphertextInvalid(
                f"a data key wrapped by KEK {kek_id!r} does not unwrap with the configured "
                f"KEK of that id: it is a different key (check {CONFIGURE})"
            ) from None

    async def close(self) -> None:
        return None


@dataclass
class KeyVaultKeks:
    """A Key Vault key: `key_id` is https://<vault>.vault.azure.net/keys/<name>[/<version>].

    Without a version, new data keys are wrapped by the key's current version (read when
    this process first wraps); rows wrapped by any version of the key still unwrap."""

    key_id: str
    credential: AsyncTokenCredential
    options: dict[str, Any] = field(default_factory=dict)  # the SDK clients' (transport)
    _clients: dict[str, CryptographyClient] = field(default_factory=dict)

    @property
    def _key_base(self) -> str:
        # https://vault/keys/name, whatever the configured id's version
        parts = self.key_id.rstrip("/").split("/")
        return "/".join(parts[:5])

    def holds(self, kek_id: str) -> bool:
        return kek_id == self._key_base or kek_id.startswith(self._key_base + "/")

    def _client(self, key_id: str) -> CryptographyClient:
        from azure.keyvault.keys.crypto.aio import CryptographyClient

        client = self._clients.get(key_id)
        if client is None:
            client = self._clients[key_id] = CryptographyClient(
                key_id, self.credential, **self.options
            )
        return client

    async def wrap(self, data_key: bytes) -> Wrapped:
        from azure.core.exceptions import AzureError
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        try:
            result = await self._client(self.key_id).wrap_key(
                KeyWrapAlgorithm.rsa_oaep_256, data_key
            )
        except AzureError as error:
            raise EncryptionKeyUnavailable(
                f"Key Vault key {self.key_id!r} could not wrap a data key "
                f"({type(error).__name__}: {_first_line(error)})"
            ) from None
        return Wrapped(result.key_id or self.key_id, result.encrypted_key)

    async def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        from azure.core.exceptions import AzureError
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        try:
            result = await self._client(kek_id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        except AzureError as error:
            raise EncryptionKeyUnavailable(
                f"Key Vault key {kek_id!r} could not unwrap a data key "
                f"({type(error).__name__}: {_first_line(error)})"
            ) from None
        return result.key

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self.credential.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no detail"


@dataclass
class Keks:
    """Every KEK this process holds; `wrapper` wraps new data keys (Key Vault when
    configured, else the active environment KEK)."""

    sources: list[KeyWrapper]

    @property
    def wrapper(self) -> KeyWrapper:
        return self.sources[0]

    def holds(self, kek_id: str) -> bool:
        return any(source.holds(kek_id) for source in self.sources)

    async def wrap(self, data_key: bytes) -> Wrapped:
        return await self.wrapper.wrap(data_key)

    async def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        for source in self.sources:
            if source.holds(kek_id):
                return await source.unwrap(kek_id, wrapped)
        raise EncryptionKeyUnavailable(
            f"key-encryption key {kek_id!r} is not configured: data keys wrapped by it cannot "
            f"be read; add it back ({CONFIGURE}, or APIARY_ENCRYPTION__PREVIOUS_KEKS) until "
            "`apiary encryption rotate` has re-wrapped them"
        )

    async def close(self) -> None:
        for source in self.sources:
            await source.close()


def keks_from_settings(settings: EncryptionSettings) -> Keks | None:
    """The configured KEKs, or None when encryption at rest is not configured."""
    sources: list[KeyWrapper] = []
    if settings.key_vault_key_id:
        from azure.identity.aio import DefaultAzureCredential

        options: dict[str, Any] = {}
        # azure-core's aiohttp transport ignores SSL_CERT_FILE once aiohttp is imported
        # (aiohttp builds its default TLS context at import): hand a CA bundle over.
        ca_file = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
        if ca_file:
            options["connection_verify"] = ca_file
        # Managed identity, workload identity or AZURE_CLIENT_ID/SECRET/TENANT_ID: whatever
        # the deployment provides, as for the gateway's Azure AD providers.
        credential = DefaultAzureCredential(**options)
        sources.append(KeyVaultKeks(settings.key_vault_key_id, credential, options))
    local = settings.local_keys()
    if local:
        sources.append(LocalKeks(local))
    return Keks(sources) if sources else None
