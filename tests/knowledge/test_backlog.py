"""Ingestion jobs live in memory: a restarted process picks up what was left unfinished."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from apiary.authz.scope import TenantScope
from apiary.config import Settings
from apiary.knowledge.models import DocumentStatus, KnowledgeDocument
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import make_tenant
from tests.knowledge.helpers import BASES, create_base, ingested, upload

pytestmark = pytest.mark.both_databases

CORPUS = Path(__file__).with_name("corpus")


async def test_a_restart_resumes_unfinished_documents(
    settings: Settings, runtime: Runtime, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    done = await upload(
        client, tenant.admin, kb["id"], "parking.txt", (CORPUS / "parking.txt").read_bytes()
    )
    stalled = await upload(
        client, tenant.admin, kb["id"], "travel.md", (CORPUS / "travel.md").read_bytes()
    )
    await ingested(runtime)
    # As if the process had died mid-ingestion of one document.
    async with runtime.session_factory() as session:
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == uuid.UUID(stalled["id"]))
            .values(status=DocumentStatus.PROCESSING, chunks_done=0)
        )
        await session.commit()

    # A new process (its own Qdrant folder: local mode admits one client per folder).
    app = create_app(settings.model_copy(update={"data_dir": tmp_path}))
    async with app.router.lifespan_context(app):
        restarted: Runtime = app.state.runtime
        await restarted.ingestion.join()  # the backlog first, then its jobs
        scope = TenantScope(uuid.UUID(tenant.id))
        assert await restarted.vectors.count(scope, document_id=uuid.UUID(stalled["id"])) > 0
        # The finished document was left alone.
        assert await restarted.vectors.count(scope, document_id=uuid.UUID(done["id"])) == 0
    got = await client.get(
        f"{BASES}/{kb['id']}/documents/{stalled['id']}", headers=tenant.admin.headers
    )
    assert got.json()["status"] == "ready"
