"""Encryption at rest: uploaded documents and conversation memory are ciphertext in the
database (and Redis), read back through the real upload → ingest → search path and the
memory service; KEK and data key rotation with data in place; wrong and missing keys.

Raw columns are read with SQL, beneath the ORM and the keyring, so an assertion that the
plaintext is absent looks at what a stolen backup would hold."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Uuid, bindparam, text

from apiary.agents.models import Agent
from apiary.authz.scope import TenantScope
from apiary.crypto import envelope
from apiary.crypto.errors import CiphertextInvalid, EncryptionKeyUnavailable
from apiary.crypto.keyring import Keyring
from apiary.db import session_scope
from apiary.knowledge.models import DOCUMENT_CONTENT
from apiary.knowledge.service import reencrypt_documents
from apiary.memory.database_store import DatabaseMemoryStore
from apiary.memory.encrypted_store import (
    EncryptedMemoryStore,
    reencrypt_database_threads,
    reencrypt_redis_threads,
)
from apiary.memory.redis_store import RedisMemoryStore, thread_keys
from apiary.memory.service import memory_service
from apiary.memory.store import MemoryStore, Summary
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.crypto.conftest import fresh_keyring, local, new_key
from tests.factories import TenantFixture, make_tenant
from tests.knowledge.helpers import BASES, create_base, ingested, search, upload

pytestmark = pytest.mark.both_databases

SECRET = "The night heron's landing code is PLUM-7731"
DOCUMENT = (
    f"# Field notes\n\n{SECRET}, written on the north pier.\n\n"
    "Herons wait motionless in shallow water before striking at fish.\n"
).encode()


async def _raw_content(runtime: Runtime, document_id: str) -> bytes:
    async with runtime.engine.connect() as connection:
        statement = text("SELECT content FROM knowledge_documents WHERE id = :id")
        value = await connection.scalar(
            statement.bindparams(bindparam("id", type_=Uuid)), {"id": uuid.UUID(document_id)}
        )
    assert value is not None
    return bytes(value)


async def _stored_chunks(runtime: Runtime, document_id: str) -> list[str]:
    """A document's chunks' text as the vector store holds it, read with Qdrant's client."""

    def work(client: Any) -> list[str]:
        return [
            str(point.payload["text"])
            for name in runtime.vectors._existing_collections(client)
            for point in client.scroll(name, limit=10_000, with_payload=True)[0]
            if point.payload is not None and point.payload["document_id"] == document_id
        ]

    return await runtime.vectors._call(work)


async def _data_keys(runtime: Runtime) -> list[dict[str, Any]]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT tenant_id, version, kek_id, wrapped_key FROM tenant_data_keys")
        )
        keys = [dict(row._mapping) for row in rows]
    for key in keys:  # SQLite gives the UUID as its hex text
        key["tenant_id"] = uuid.UUID(str(key["tenant_id"]))
    return keys


async def _document(client: httpx.AsyncClient, tenant: TenantFixture, kb: str, doc: str) -> Any:
    response = await client.get(f"{BASES}/{kb}/documents/{doc}", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _reindex(
    client: httpx.AsyncClient, runtime: Runtime, tenant: TenantFixture, kb: str, doc: str
) -> Any:
    response = await client.post(
        f"{BASES}/{kb}/documents/{doc}/reindex", headers=tenant.admin.headers
    )
    assert response.status_code == 202, response.text
    await ingested(runtime)
    return await _document(client, tenant, kb, doc)


async def test_an_uploaded_document_is_ciphertext_in_the_database_and_still_ingests(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    created = await upload(client, tenant.admin, kb["id"], "notes.md", DOCUMENT)

    stored = await _raw_content(runtime, created["id"])
    assert SECRET.encode() not in stored
    assert b"heron" not in stored
    assert stored.startswith(envelope.MAGIC)
    assert envelope.header(stored).key_version == 1
    [key] = await _data_keys(runtime)
    assert (key["tenant_id"], key["version"], key["kek_id"]) == (uuid.UUID(tenant.id), 1, "k1")
    assert len(bytes(key["wrapped_key"])) == 40  # AES key wrap of 32 bytes, never the key

    await ingested(runtime)
    assert (await _document(client, tenant, kb["id"], created["id"]))["status"] == "ready"
    chunks = await _stored_chunks(runtime, created["id"])
    assert chunks
    assert all(chunk.startswith(envelope.TEXT_PREFIX) for chunk in chunks)
    assert not any("heron" in chunk for chunk in chunks)
    [hit, *_] = await search(client, tenant.admin, kb["id"], "heron landing code")
    assert SECRET in hit["text"]
    # The same bytes again are found by the plaintext's digest: one document, not two.
    again = await upload(client, tenant.admin, kb["id"], "copy.md", DOCUMENT, expect=200)
    assert again["id"] == created["id"]


async def _stores(runtime: Runtime, keyring: Keyring) -> list[tuple[str, MemoryStore]]:
    stores: list[tuple[str, MemoryStore]] = [
        ("database", EncryptedMemoryStore(DatabaseMemoryStore(runtime.session_factory), keyring))
    ]
    if TEST_REDIS and runtime.redis is not None:
        stores.append(("redis", EncryptedMemoryStore(RedisMemoryStore(runtime.redis), keyring)))
    return stores


async def _agent(runtime: Runtime, tenant: TenantFixture) -> uuid.UUID:
    """An agent for threads to belong to (the tests' gateway serves no model to name)."""
    async with session_scope(runtime.session_factory) as session:
        agent = TenantScope(uuid.UUID(tenant.id)).add(session, Agent(name="a", model="m"))
        await session.flush()
        return agent.id


async def _raw_memory(
    runtime: Runtime, kind: str, tenant_id: uuid.UUID, agent_id: uuid.UUID
) -> str:
    """Everything a thread's store holds for it, as one string."""
    if kind == "database":
        async with runtime.engine.connect() as connection:
            turns = await connection.execute(text("SELECT task, answer FROM thread_turns"))
            summaries = await connection.execute(text("SELECT summary FROM thread_summaries"))
            return repr([*turns.all(), *summaries.all()])
    assert runtime.redis is not None
    keys = thread_keys(TenantScope(tenant_id), agent_id=agent_id, thread_id="t-1")
    raw = await runtime.redis.lrange(keys.turns, 0, -1)
    summary = await runtime.redis.hgetall(keys.summary)
    return repr([raw, summary])


class _Deps:
    def __init__(self, memory: MemoryStore) -> None:
        self.memory = memory


async def test_memory_turns_and_summaries_are_ciphertext_in_each_store(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring
) -> None:
    tenant = await make_tenant(runtime, client)
    tenant_id, agent_id = uuid.UUID(tenant.id), await _agent(runtime, tenant)
    for kind, store in await _stores(runtime, encrypted):
        deps = _Deps(store)
        await memory_service.record_turn(
            deps,
            tenant_id=tenant_id,
            agent_id=agent_id,
            thread_id="t-1",
            execution_id=uuid.uuid4(),
            task="My locker combination is 31-7-22.",
            answer="Noted: locker 31-7-22.",
        )
        await store.save_summary(
            TenantScope(tenant_id),
            agent_id=agent_id,
            thread_id="t-1",
            summary=Summary("The user keeps a locker at 31-7-22.", 0),
        )
        raw = await _raw_memory(runtime, kind, tenant_id, agent_id)
        assert "31-7-22" not in raw, kind
        assert envelope.TEXT_PREFIX in raw, kind
        context = await memory_service.context_text(
            deps, tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
        )
        assert "User: My locker combination is 31-7-22." in context, kind
        assert "The user keeps a locker at 31-7-22." in context, kind
        # Another process, with the same KEK and nothing cached, reads it too.
        other = _Deps(
            EncryptedMemoryStore(
                store.inner if isinstance(store, EncryptedMemoryStore) else store,
                fresh_keyring(runtime, encrypted.keks),
            )
        )
        assert (
            await memory_service.context_text(
                other, tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
            )
            == context
        )


async def test_data_written_before_encryption_reads_and_reencrypt_encrypts_it(
    client: httpx.AsyncClient, runtime: Runtime, kek_one: bytes
) -> None:
    tenant = await make_tenant(runtime, client)
    tenant_id, agent_id = uuid.UUID(tenant.id), await _agent(runtime, tenant)
    kb = await create_base(client, tenant.admin)
    created = await upload(client, tenant.admin, kb["id"], "notes.md", DOCUMENT)
    await ingested(runtime)
    plain_stores = await _stores(runtime, runtime.encryption)  # encryption not configured
    for _, store in plain_stores:
        await memory_service.record_turn(
            _Deps(store),
            tenant_id=tenant_id,
            agent_id=agent_id,
            thread_id="t-1",
            execution_id=uuid.uuid4(),
            task="Remember PLUM-7731.",
            answer="Remembered.",
        )
    assert SECRET.encode() in await _raw_content(runtime, created["id"])
    assert any(SECRET in chunk for chunk in await _stored_chunks(runtime, created["id"]))

    # Encryption is turned on: the old rows still read (re-index, memory) as they are.
    runtime.encryption.keks = local(k1=kek_one)
    try:
        # Chunks indexed before still read (search decrypts only what is sealed).
        [hit, *_] = await search(client, tenant.admin, kb["id"], "heron landing code")
        assert SECRET in hit["text"]
        document = await _reindex(client, runtime, tenant, kb["id"], created["id"])
        assert document["status"] == "ready", document["error"]
        for kind, store in await _stores(runtime, runtime.encryption):
            context = await memory_service.context_text(
                _Deps(store), tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
            )
            assert "Remember PLUM-7731." in context, kind

        rewritten = await reencrypt_documents(runtime.session_factory, runtime.encryption)
        assert rewritten == 1
        rows = await reencrypt_database_threads(runtime.session_factory, runtime.encryption)
        assert rows == 1
        if TEST_REDIS and runtime.redis is not None:
            assert await reencrypt_redis_threads(runtime.redis, runtime.encryption) == 1
        for kind, _ in plain_stores:
            assert "PLUM-7731" not in await _raw_memory(runtime, kind, tenant_id, agent_id), kind
        stored = await _raw_content(runtime, created["id"])
        assert SECRET.encode() not in stored
        assert stored.startswith(envelope.MAGIC)
        # Run again: nothing left to do.
        assert await reencrypt_documents(runtime.session_factory, runtime.encryption) == 0
        assert await reencrypt_database_threads(runtime.session_factory, runtime.encryption) == 0
        document = await _reindex(client, runtime, tenant, kb["id"], created["id"])
        assert document["status"] == "ready", document["error"]
        chunks = await _stored_chunks(runtime, created["id"])
        assert chunks
        assert not any("PLUM-7731" in chunk for chunk in chunks)  # re-indexed: sealed too
        for kind, store in await _stores(runtime, runtime.encryption):
            context = await memory_service.context_text(
                _Deps(store), tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
            )
            assert "Remember PLUM-7731." in context, kind
    finally:
        runtime.encryption.keks = None
        runtime.encryption.forget()


async def test_kek_rotation_rewraps_while_data_exists_and_the_old_kek_can_then_go(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring, kek_one: bytes
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    created = await upload(client, tenant.admin, kb["id"], "notes.md", DOCUMENT)
    await ingested(runtime)
    stored = await _raw_content(runtime, created["id"])
    tenant_id = uuid.UUID(tenant.id)

    # The new KEK wraps; the old one is still accepted until the rotation is done.
    kek_two = new_key()
    rotating = fresh_keyring(runtime, local(k2=kek_two, k1=kek_one))
    report = await rotating.rewrap()
    assert (report.rewrapped, report.unchanged, report.kek_ids) == (1, 0, {"k2": 1})
    assert await rotating.rewrap() == type(report)(rewrapped=0, unchanged=1, kek_ids={"k2": 1})
    # The data itself was not rewritten: the same ciphertext, under the same data key.
    assert await _raw_content(runtime, created["id"]) == stored

    # A process with only the new KEK reads the old data; the running one (which holds the
    # data key unwrapped) carries on without noticing.
    only_new = fresh_keyring(runtime, local(k2=kek_two))
    plain = await only_new.decrypt(tenant_id, stored, purpose=DOCUMENT_CONTENT)
    assert SECRET.encode() in plain
    document = await _reindex(client, runtime, tenant, kb["id"], created["id"])
    assert document["status"] == "ready", document["error"]

    # And one with only the old KEK no longer can: it names the key it lacks.
    only_old = fresh_keyring(runtime, local(k1=kek_one))
    with pytest.raises(EncryptionKeyUnavailable, match="'k2' is not configured"):
        await only_old.decrypt(tenant_id, stored, purpose=DOCUMENT_CONTENT)
    assert await only_old.missing_keks() == {"k2": 1}


async def test_data_key_rotation_encrypts_new_data_with_a_new_version_and_old_data_reads(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring
) -> None:
    tenant = await make_tenant(runtime, client)
    tenant_id = uuid.UUID(tenant.id)
    kb = await create_base(client, tenant.admin)
    first = await upload(client, tenant.admin, kb["id"], "one.md", DOCUMENT)
    assert await encrypted.rotate_data_keys() == 1
    second = await upload(client, tenant.admin, kb["id"], "two.md", DOCUMENT + b"\nMore.\n")
    await ingested(runtime)
    old, new = await _raw_content(runtime, first["id"]), await _raw_content(runtime, second["id"])
    assert (envelope.header(old).key_version, envelope.header(new).key_version) == (1, 2)
    for document in (first, second):
        status = await _document(client, tenant, kb["id"], document["id"])
        assert status["status"] == "ready", status["error"]
    # Re-encryption moves the old document to the new version; both still read.
    assert await reencrypt_documents(runtime.session_factory, encrypted) == 1
    old = await _raw_content(runtime, first["id"])
    assert envelope.header(old).key_version == 2
    reader = fresh_keyring(runtime, encrypted.keks)
    assert await reader.decrypt(tenant_id, old, purpose=DOCUMENT_CONTENT) == DOCUMENT


async def test_a_wrong_key_or_misplaced_ciphertext_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring
) -> None:
    tenant = await make_tenant(runtime, client)
    other = await make_tenant(runtime, client)
    tenant_id, other_id = uuid.UUID(tenant.id), uuid.UUID(other.id)
    sealed = await encrypted.encrypt(tenant_id, b"PLUM-7731", purpose=DOCUMENT_CONTENT)
    await encrypted.encrypt(other_id, b"x", purpose=DOCUMENT_CONTENT)  # its own data key

    # A KEK of the same id but other bytes (a typo in the secret) does not unwrap.
    impostor = fresh_keyring(runtime, local(k1=new_key()))
    with pytest.raises(CiphertextInvalid, match="different key"):
        await impostor.decrypt(tenant_id, sealed, purpose=DOCUMENT_CONTENT)
    # Another tenant's row, another field, a flipped byte: none decrypts.
    with pytest.raises(CiphertextInvalid, match=f"tenant {other_id}"):
        await encrypted.decrypt(other_id, sealed, purpose=DOCUMENT_CONTENT)
    with pytest.raises(CiphertextInvalid):
        await encrypted.decrypt(tenant_id, sealed, purpose="thread_turn.task")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CiphertextInvalid):
        await encrypted.decrypt(tenant_id, tampered, purpose=DOCUMENT_CONTENT)
    # A version that does not exist is named.
    forged = sealed[:4] + (9).to_bytes(4, "big") + sealed[8:]
    with pytest.raises(EncryptionKeyUnavailable, match="data key version 9 of tenant"):
        await encrypted.decrypt(tenant_id, forged, purpose=DOCUMENT_CONTENT)
    assert await encrypted.decrypt(tenant_id, sealed, purpose=DOCUMENT_CONTENT) == b"PLUM-7731"
    # Text that only looks like ciphertext is refused as such, not a 500.
    with pytest.raises(CiphertextInvalid, match="not ciphertext"):
        await encrypted.decrypt_text(tenant_id, envelope.TEXT_PREFIX + "@@@", purpose="x")


async def test_a_missing_kek_is_a_clear_error_at_the_api_and_in_ingestion(
    client: httpx.AsyncClient, runtime: Runtime, encrypted: Keyring, kek_one: bytes
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    created = await upload(client, tenant.admin, kb["id"], "notes.md", DOCUMENT)
    await ingested(runtime)

    # The process restarts with a new KEK only, before anyone ran the rotation.
    encrypted.keks = local(k2=new_key())
    encrypted.forget()
    response = await client.post(
        f"{BASES}/{kb['id']}/documents",
        headers=tenant.admin.headers,
        files={"file": ("more.md", b"# More\n\nAnother page.\n", "text/markdown")},
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "EncryptionKeyUnavailable"
    assert "key-encryption key 'k1' is not configured" in body["detail"]
    assert "APIARY_ENCRYPTION__PREVIOUS_KEKS" in body["detail"]

    document = await _reindex(client, runtime, tenant, kb["id"], created["id"])
    assert document["status"] == "failed"
    assert "key-encryption key 'k1' is not configured" in document["error"]

    # Without any KEK configured at all, the error says encryption is off.
    encrypted.keks = None
    document = await _reindex(client, runtime, tenant, kb["id"], created["id"])
    assert document["status"] == "failed"
    assert "encryption is not configured" in document["error"]
    assert "'k1'" in document["error"]
