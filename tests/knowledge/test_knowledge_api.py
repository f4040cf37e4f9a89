"""Knowledge bases over the API: upload, ingestion progress, dedup, failures, limits, deletes."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.knowledge.tasks import ingest_document
from apiary.runtime import Runtime
from tests.factories import TenantFixture, make_member, make_tenant
from tests.knowledge.documents import pdf_bytes
from tests.knowledge.helpers import BASES, create_base, ingested, search, upload

pytestmark = pytest.mark.both_databases

CORPUS = Path(__file__).with_name("corpus")


def _scope(tenant: TenantFixture) -> TenantScope:
    return TenantScope(uuid.UUID(tenant.id))


async def _document(
    client: httpx.AsyncClient, tenant: TenantFixture, kb_id: str, doc_id: str
) -> dict[str, object]:
    response = await client.get(f"{BASES}/{kb_id}/documents/{doc_id}", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_upload_ingests_and_search_cites_page_and_span(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin, chunk_size=300, chunk_overlap=50)
    assert kb["embedding_model"] == "minilm"
    manual = (CORPUS / "kestrel-manual.pdf").read_bytes()
    created = await upload(client, tenant.admin, kb["id"], "kestrel-manual.pdf", manual)
    assert created["status"] == "queued"
    assert created["content_type"] == "application/pdf"
    await ingested(runtime)

    document = await _document(client, tenant, kb["id"], created["id"])
    assert document["status"] == "ready"
    assert document["error"] is None
    assert document["chunk_count"] == document["chunks_done"] == 3  # one per page here

    hits = await search(client, tenant.admin, kb["id"], "what does error E-17 mean", top_k=2)
    best = hits[0]
    assert "E-17" in best["text"]
    assert best["citation"]["filename"] == "kestrel-manual.pdf"
    assert best["citation"]["document_id"] == created["id"]
    assert best["citation"]["page"] == 3
    assert best["citation"]["char_end"] - best["citation"]["char_start"] == len(best["text"])
    listed = await client.get(f"{BASES}/{kb['id']}/documents", headers=tenant.admin.headers)
    assert [d["id"] for d in listed.json()["items"]] == [created["id"]]


async def test_local_collections_write_through_a_write_ahead_log(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Local mode commits each point on its own: in WAL mode that is one fsync instead of
    several, about 3-6x the upsert throughput here (docs/benchmarks.md)."""
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    await upload(client, tenant.admin, kb["id"], "travel.md", (CORPUS / "travel.md").read_bytes())
    await ingested(runtime)
    files = list(runtime.settings.qdrant_path.glob("collection/*/storage.sqlite"))
    assert files
    for file in files:
        with contextlib.closing(sqlite3.connect(file)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_same_content_twice_is_one_document(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    content = (CORPUS / "travel.md").read_bytes()
    first = await upload(client, tenant.admin, kb["id"], "travel.md", content)
    await ingested(runtime)
    stored = await runtime.vectors.count(_scope(tenant), knowledge_base_id=uuid.UUID(kb["id"]))
    assert stored > 0

    again = await upload(client, tenant.admin, kb["id"], "travel-copy.md", content, expect=200)
    await ingested(runtime)
    assert again["id"] == first["id"]
    assert again["filename"] == "travel.md"
    assert (
        await runtime.vectors.count(_scope(tenant), knowledge_base_id=uuid.UUID(kb["id"])) == stored
    )
    listed = await client.get(f"{BASES}/{kb['id']}/documents", headers=tenant.admin.headers)
    assert listed.json()["total"] == 1

    # The same file in another knowledge base is a document of its own there.
    other = await create_base(client, tenant.admin, name="other")
    await upload(client, tenant.admin, other["id"], "travel.md", content, expect=201)


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\ngarbage that is not a PDF", "could not read pdf"),
        ("broken.docx", b"not a zip at all", "could not read docx"),
        ("broken.json", b"{ nope", "invalid JSON"),
    ],
)
async def test_a_broken_file_fails_with_a_reason_and_the_rest_stays(
    client: httpx.AsyncClient, runtime: Runtime, filename: str, content: bytes, reason: str
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    good = await upload(
        client, tenant.admin, kb["id"], "oncall.md", (CORPUS / "oncall.md").read_bytes()
    )
    await ingested(runtime)
    before = await runtime.vectors.count(_scope(tenant), knowledge_base_id=uuid.UUID(kb["id"]))

    bad = await upload(client, tenant.admin, kb["id"], filename, content)
    await ingested(runtime)
    failed = await _document(client, tenant, kb["id"], bad["id"])
    assert failed["status"] == "failed"
    assert reason in str(failed["error"])
    assert (await _document(client, tenant, kb["id"], good["id"]))["status"] == "ready"
    assert (
        await runtime.vectors.count(_scope(tenant), knowledge_base_id=uuid.UUID(kb["id"])) == before
    )
    hits = await search(client, tenant.admin, kb["id"], "on-call compensation per week")
    assert "300 EUR" in hits[0]["text"]


async def test_upload_size_limit_is_413_with_the_limit_named(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    monkeypatch.setattr(runtime.settings.knowledge, "max_upload_bytes", 1000)
    # Just over the limit: refused after reading, exactly at the limit.
    response = await client.post(
        f"{BASES}/{kb['id']}/documents",
        headers=tenant.admin.headers,
        files={"file": ("big.txt", b"x" * 1001)},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PayloadTooLarge"
    assert "'big.txt'" in response.json()["detail"]
    assert "APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES" in response.json()["detail"]
    # Far over it: refused from Content-Length, before the body is parsed.
    response = await client.post(
        f"{BASES}/{kb['id']}/documents",
        headers=tenant.admin.headers,
        files={"file": ("huge.txt", b"x" * 200_000)},
    )
    assert response.status_code == 413
    assert "limit is 1000 bytes" in response.json()["detail"]
    await upload(client, tenant.admin, kb["id"], "fits.txt", b"y" * 1000)


@pytest.mark.parametrize("filename", ["setup.exe", "notes", "archive.tar.gz"])
async def test_an_unsupported_type_is_415_naming_it(
    client: httpx.AsyncClient, runtime: Runtime, filename: str
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    response = await client.post(
        f"{BASES}/{kb['id']}/documents",
        headers=tenant.admin.headers,
        files={"file": (filename, b"some bytes")},
    )
    assert response.status_code == 415, response.text
    assert filename in response.json()["detail"]
    assert ".pdf" in response.json()["detail"]


async def test_an_upload_without_a_file_field_is_422(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    response = await client.post(
        f"{BASES}/{kb['id']}/documents", headers=tenant.admin.headers, data={"text": "hello"}
    )
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"]


async def test_deleting_removes_vectors(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    kb_id = uuid.UUID(kb["id"])
    first = await upload(
        client, tenant.admin, kb["id"], "expenses.md", (CORPUS / "expenses.md").read_bytes()
    )
    await upload(
        client, tenant.admin, kb["id"], "parking.txt", (CORPUS / "parking.txt").read_bytes()
    )
    await ingested(runtime)
    scope = _scope(tenant)
    total = await runtime.vectors.count(scope, knowledge_base_id=kb_id)
    of_first = await runtime.vectors.count(scope, document_id=uuid.UUID(first["id"]))
    assert 0 < of_first < total

    deleted = await client.delete(
        f"{BASES}/{kb['id']}/documents/{first['id']}", headers=tenant.admin.headers
    )
    assert deleted.status_code == 204
    assert await runtime.vectors.count(scope, knowledge_base_id=kb_id) == total - of_first
    hits = await search(
        client, tenant.admin, kb["id"], "receipt needed above what amount", top_k=10
    )
    assert all(hit["citation"]["document_id"] != first["id"] for hit in hits)

    deleted = await client.delete(f"{BASES}/{kb['id']}", headers=tenant.admin.headers)
    assert deleted.status_code == 204
    assert await runtime.vectors.count(scope, knowledge_base_id=kb_id) == 0
    gone = await client.get(f"{BASES}/{kb['id']}", headers=tenant.admin.headers)
    assert gone.status_code == 404


async def test_ingestion_twice_and_reindex_do_not_duplicate(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin, chunk_size=200, chunk_overlap=20)
    created = await upload(
        client, tenant.admin, kb["id"], "security.md", (CORPUS / "security.md").read_bytes()
    )
    await ingested(runtime)
    scope = _scope(tenant)
    stored = await runtime.vectors.count(scope, document_id=uuid.UUID(created["id"]))
    assert stored > 2

    await ingest_document(runtime, uuid.UUID(created["id"]))  # ready already: a no-op
    response = await client.post(
        f"{BASES}/{kb['id']}/documents/{created['id']}/reindex", headers=tenant.admin.headers
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    # Run by hand at the same time as the queued job: both finish with the same points.
    await ingest_document(runtime, uuid.UUID(created["id"]))
    await ingested(runtime)
    document = await _document(client, tenant, kb["id"], created["id"])
    assert document["status"] == "ready"
    assert document["chunks_done"] == document["chunk_count"] == stored
    assert await runtime.vectors.count(scope, document_id=uuid.UUID(created["id"])) == stored


async def test_a_deleted_document_leaves_no_vectors_even_mid_ingestion(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    long_pdf = pdf_bytes([[f"Page {n} talks about topic number {n}."] for n in range(40)])
    created = await upload(client, tenant.admin, kb["id"], "long.pdf", long_pdf)
    # Deleted while (or before) its job runs: the job must not leave points behind.
    deleted = await client.delete(
        f"{BASES}/{kb['id']}/documents/{created['id']}", headers=tenant.admin.headers
    )
    assert deleted.status_code == 204
    await ingested(runtime)
    assert await runtime.vectors.count(_scope(tenant), document_id=uuid.UUID(created["id"])) == 0


async def test_viewers_search_and_only_writers_change(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    await upload(
        client, tenant.admin, kb["id"], "parking.txt", (CORPUS / "parking.txt").read_bytes()
    )
    await ingested(runtime)
    viewer = await make_member(client, tenant, Role.VIEWER)
    developer = await make_member(client, tenant, Role.DEVELOPER)
    assert (await search(client, viewer, kb["id"], "electric car charging"))[0]["text"]
    refused = await client.post(
        f"{BASES}/{kb['id']}/documents", headers=viewer.headers, files={"file": ("a.txt", b"x")}
    )
    assert refused.status_code == 403
    assert (await client.post(BASES, headers=viewer.headers, json={"name": "v"})).status_code == 403
    assert (await client.delete(f"{BASES}/{kb['id']}", headers=viewer.headers)).status_code == 403
    await create_base(client, developer, name="by-developer")


async def test_knowledge_base_validation(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client)
    await create_base(client, tenant.admin, name="dup")
    duplicate = await client.post(BASES, headers=tenant.admin.headers, json={"name": "dup"})
    assert duplicate.status_code == 409
    overlap = await client.post(
        BASES,
        headers=tenant.admin.headers,
        json={"name": "o", "chunk_size": 200, "chunk_overlap": 200},
    )
    assert overlap.status_code == 422
    unknown = await client.post(
        BASES, headers=tenant.admin.headers, json={"name": "m", "embedding_model": "no-such-model"}
    )
    assert unknown.status_code == 422
    assert "no-such-model" in unknown.json()["detail"]
