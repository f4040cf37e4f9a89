"""A knowledge base embedded by a provider's model through the gateway: costs in the ledger."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from apiary.config import Settings
from apiary.gateway.config import RouteConfig
from apiary.main import create_app
from apiary.runtime import Runtime
from apiary.usage.models import LedgerEntry
from tests.factories import make_tenant
from tests.fakes import FakeUpstream
from tests.gateway.conftest import providers
from tests.knowledge.helpers import BASES, create_base, search, upload

CORPUS = Path(__file__).with_name("corpus")


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
