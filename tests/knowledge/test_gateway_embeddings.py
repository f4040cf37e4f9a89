"""A knowledge base embedded by a provider's model through the gateway: costs in the ledger."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from apiary.config import Settings
from apiary.gateway.config import RouteConfig
from apiary.limits import enforcer
from apiary.main import create_app
from apiary.runtime import Runtime
from apiary.usage.models import LedgerEntry
from tests.factories import make_tenant
from tests.fakes import FakeUpstream
from tests.gateway.conftest import providers
from tests.knowledge.helpers import BASES, create_base, search, upload

CORPUS = Path(__file__).with_name("corpus")
RPM = 3
# Five paragraphs of about 90 characters: five chunks of at most 100 characters.
STEPS = "\n\n".join(
    f"Step {n}: check the {n} gauges on panel {n}, then write the readings in the log book."
    for n in ("one", "two", "three", "four", "five")
).encode()


async def test_a_gateway_embedding_model_is_used_and_accounted(
    settings: Settings,
    runtime: Runtime,  # the shared app's runtime: its clean slate empties the tables first
    fake_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    configured = settings.model_copy(
        update={
            "providers": providers(fake_upstream),
            "routes": {"default": RouteConfig(models=["oai/gpt-4o-mini"])},
            "data_dir": tmp_path,  # a Qdrant folder of its own: local mode is one client only
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        gateway_runtime: Runtime = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as client:
            tenant = await make_tenant(gateway_runtime, client)
            kb = await create_base(client, tenant.admin, embedding_model="text-embedding-3-small")
            document = await upload(
                client, tenant.admin, kb["id"], "oncall.md", (CORPUS / "oncall.md").read_bytes()
            )
            await gateway_runtime.ingestion.join()
            got = await client.get(
                f"{BASES}/{kb['id']}/documents/{document['id']}", headers=tenant.admin.headers
            )
            assert got.json()["status"] == "ready", got.text
            hits = await search(client, tenant.admin, kb["id"], "on-call compensation")
            assert hits
            assert {hit["citation"]["document_id"] for hit in hits} == {document["id"]}

            await gateway_runtime.ledger.flush()
            async with gateway_runtime.session_factory() as session:
                entries = list(
                    await session.scalars(
                        select(LedgerEntry).where(LedgerEntry.tenant_id == uuid.UUID(tenant.id))
                    )
                )
            # One call per ingestion batch, one for the query: all on this tenant's ledger.
            assert len(entries) >= 2
            assert {entry.kind for entry in entries} == {"embedding"}
            assert {entry.model for entry in entries} == {"text-embedding-3-small"}
            upstream_calls = [
                r for r in fake_upstream.requests_for("openai") if r.path.endswith("/embeddings")
            ]
            assert len(upstream_calls) == len(entries)


async def _ingest_under_rpm(
    settings: Settings,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    max_wait_s: float,
) -> dict[str, Any]:
    """STEPS ingested by a gateway model, one chunk per call, for a tenant allowed RPM calls a
    minute; the document as it ends."""
    configured = settings.model_copy(
        update={
            "providers": providers(fake_upstream),
            "routes": {"default": RouteConfig(models=["oai/gpt-4o-mini"])},
            "data_dir": tmp_path,
            "knowledge": settings.knowledge.model_copy(
                update={"embed_batch_size": 1, "embed_rate_limit_wait_s": max_wait_s}
            ),
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        gateway_runtime: Runtime = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as client:
            tenant = await make_tenant(gateway_runtime, client)
            limited = await client.patch(
                "/api/v1/limits", headers=tenant.admin.headers, json={"tenant_rpm": RPM}
            )
            assert limited.status_code == 200, limited.text
            kb = await create_base(
                client,
                tenant.admin,
                embedding_model="text-embedding-3-small",
                chunk_size=100,
                chunk_overlap=0,
            )
            # The limiter counts calendar minutes; its clock is set 2 s before one ends, so the
            # document's calls straddle two minutes and the wait is seconds, not a minute.
            real_time = time.time
            offset = 60 - real_time() % 60 - 2
            monkeypatch.setattr(
                enforcer,
                "time",
                SimpleNamespace(
                    time=lambda: real_time() + offset, monotonic=time.monotonic, gmtime=time.gmtime
                ),
            )
            document = await upload(client, tenant.admin, kb["id"], "steps.md", STEPS)
            await gateway_runtime.ingestion.join()
            got = await client.get(
                f"{BASES}/{kb['id']}/documents/{document['id']}", headers=tenant.admin.headers
            )
            body: dict[str, Any] = got.json()
            if body["status"] == "ready":
                hits = await search(client, tenant.admin, kb["id"], "step five", top_k=10)
                body["searchable_chunks"] = len({hit["chunk_id"] for hit in hits})
            return body


async def test_ingestion_waits_out_the_tenants_rate_limit_and_finishes(
    settings: Settings,
    runtime: Runtime,  # the shared app's runtime: its clean slate empties the tables first
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A document needing more embedding calls than the tenant's RPM allows in a minute waits
    the Retry-After each 429 gives and ends `ready` with every chunk, instead of failing."""
    started = time.monotonic()
    body = await _ingest_under_rpm(settings, fake_upstream, tmp_path, monkeypatch, max_wait_s=600)
    assert body["status"] == "ready", body
    assert RPM < body["chunk_count"] <= 2 * RPM  # more calls than one minute allows
    assert body["chunks_done"] == body["searchable_chunks"] == body["chunk_count"]
    assert time.monotonic() - started < 30  # one wait of about two seconds, not a minute


async def test_ingestion_fails_naming_the_limit_when_the_wait_is_too_long(
    settings: Settings,
    runtime: Runtime,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = await _ingest_under_rpm(settings, fake_upstream, tmp_path, monkeypatch, max_wait_s=0)
    assert body["status"] == "failed", body
    assert "tenant request rate limit reached (3 per minute)" in body["error"]
    assert "EMBED_RATE_LIMIT_WAIT_S" in body["error"]
