"""Data keys wrapped by an Azure Key Vault key, through the real azure-keyvault-keys and
azure-identity SDKs against a local Key Vault (tests/fakes/key_vault.py): the challenge,
the token, wrapKey/unwrapKey over REST, a key rotated in the vault and re-wrapped with
`rewrap`, a move from an environment KEK to Key Vault, and a disabled key refused."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from apiary.config import EncryptionSettings
from apiary.crypto import envelope
from apiary.crypto.errors import EncryptionKeyUnavailable
from apiary.crypto.keks import Keks, keks_from_settings
from apiary.crypto.keyring import Keyring
from apiary.knowledge.models import DOCUMENT_CONTENT
from apiary.runtime import Runtime
from tests.crypto.conftest import local, new_key
from tests.factories import make_tenant
from tests.fakes.key_vault import CLIENT_ID, CLIENT_SECRET, TENANT, FakeKeyVault, key_vault
from tests.knowledge.helpers import BASES, create_base, ingested, upload

pytestmark = pytest.mark.both_databases

DOCUMENT = b"# Vault notes\n\nThe heron's landing code is PLUM-7731.\n"


@pytest.fixture
async def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKeyVault]:
    async with key_vault(tmp_path) as (fake, proxy_url, cert):
        # What a deployment sets for DefaultAzureCredential; the proxy takes the SDKs'
        # connections to the real host names to the fake.
        for name in ("AZURE_AUTHORITY_HOST", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        yield fake


def _keks(key_id: str, *, also: Keks | None = None) -> Keks:
    keks = keks_from_settings(EncryptionSettings(key_vault_key_id=key_id))
    assert keks is not None
    if also is not None:
        keks.sources.extend(also.sources)
    return keks


@pytest.fixture
def keyrings(runtime: Runtime) -> Iterator[list[Keyring]]:
    """Keyrings made by a test, closed (their SDK clients, the credential) at its end."""
    made: list[Keyring] = []
    yield made
    keyring = runtime.encryption
    keyring.keks = None
    keyring.forget()


async def _close(keyrings: list[Keyring]) -> None:
    for keyring in keyrings:
        await keyring.close()


async def _kek_ids(runtime: Runtime) -> list[str]:
    async with runtime.engine.connect() as connection:
        return list((await connection.scalars(text("SELECT kek_id FROM tenant_data_keys"))).all())


async def test_key_vault_wraps_data_keys_and_unwraps_them_in_another_process(
    client: httpx.AsyncClient,
    runtime: Runtime,
    vault: FakeKeyVault,
    keyrings: list[Keyring],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first = vault.create_key("tenant-kek")
    key_id = f"{vault.vault_url}/keys/tenant-kek"  # no version: the key's current one
    runtime.encryption.keks = _keks(key_id)
    keyrings.append(Keyring(runtime.session_factory, runtime.encryption.keks))
    try:
        tenant = await make_tenant(runtime, client)
        tenant_id = uuid.UUID(tenant.id)
        kb = await create_base(client, tenant.admin)
        created = await upload(client, tenant.admin, kb["id"], "notes.md", DOCUMENT)
        await ingested(runtime)
        document = await client.get(
            f"{BASES}/{kb['id']}/documents/{created['id']}", headers=tenant.admin.headers
        )
        assert document.json()["status"] == "ready", document.json()["error"]
        assert await _kek_ids(runtime) == [first]  # the versioned key identifier
        assert vault.unauthorized >= 1  # the SDK was challenged, and answered with a token

        # Another process: nothing cached, so the vault unwraps (the private key is there).
        other = Keyring(runtime.session_factory, _keks(key_id))
        keyrings.append(other)
        async with runtime.engine.connect() as connection:
            stored = bytes(
                await connection.scalar(text("SELECT content FROM knowledge_documents")) or b""
            )
        assert b"PLUM-7731" not in stored
        assert stored.startswith(envelope.MAGIC)
        assert await other.decrypt(tenant_id, stored, purpose=DOCUMENT_CONTENT) == DOCUMENT
        assert ("unwrapkey", first) in vault.operations

        # The vault rotates the key: rewrap moves every data key to the new version, and a
        # process then reads with that version alone.
        second = vault.rotate("tenant-kek")
        rotating = Keyring(runtime.session_factory, _keks(key_id))
        keyrings.append(rotating)
        report = await rotating.rewrap()
        assert (report.rewrapped, report.kek_ids) == (1, {second: 1})
        vault.disable(first)
        after = Keyring(runtime.session_factory, _keks(key_id))
        keyrings.append(after)
        assert await after.decrypt(tenant_id, stored, purpose=DOCUMENT_CONTENT) == DOCUMENT
        assert ("unwrapkey", second) in vault.operations

        # A disabled version is a clear error naming the key, not a stack trace.
        vault.disable(second)
        refused = Keyring(runtime.session_factory, _keks(key_id))
        keyrings.append(refused)
        with pytest.raises(EncryptionKeyUnavailable) as caught:
            await refused.decrypt(tenant_id, stored, purpose=DOCUMENT_CONTENT)
        assert f"Key Vault key {second!r} could not unwrap a data key" in caught.value.detail
        assert "disabled" in caught.value.detail
        assert CLIENT_SECRET not in caplog.text
    finally:
        await _close(keyrings)


async def test_data_keys_move_from_an_environment_kek_to_key_vault(
    client: httpx.AsyncClient, runtime: Runtime, vault: FakeKeyVault, keyrings: list[Keyring]
) -> None:
    key_id = vault.create_key("tenant-kek")  # a pinned version this time
    environment = local(k1=new_key())
    before = Keyring(runtime.session_factory, environment)
    tenants = [uuid.UUID((await make_tenant(runtime, client)).id) for _ in range(2)]
    sealed = [await before.encrypt(t, b"PLUM-7731", purpose=DOCUMENT_CONTENT) for t in tenants]
    assert sorted(await _kek_ids(runtime)) == ["k1", "k1"]

    moving = Keyring(runtime.session_factory, _keks(key_id, also=environment))
    keyrings.append(moving)
    try:
        assert (await moving.rewrap()).kek_ids == {key_id: 2}
        vault_only = Keyring(runtime.session_factory, _keks(key_id))
        keyrings.append(vault_only)
        assert await vault_only.missing_keks() == {}
        for tenant_id, blob in zip(tenants, sealed, strict=True):
            plain = await vault_only.decrypt(tenant_id, blob, purpose=DOCUMENT_CONTENT)
            assert plain == b"PLUM-7731"
    finally:
        await _close(keyrings)
