"""Queries for knowledge bases and documents, all through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from apiary.authz.scope import TenantScope
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.knowledge.models import (
    DocumentStatus,
    KnowledgeBase,
    KnowledgeDocument,
    KnowledgeDocumentEvent,
)


class KnowledgeRepository:
    async def page_bases(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[KnowledgeBase], int]:
        return await paginate(
            session, scope.select(KnowledgeBase), page, KnowledgeBase.name, KnowledgeBase.id
        )

    async def get_base(
        self, session: AsyncSession, scope: TenantScope, knowledge_base_id: uuid.UUID
    ) -> KnowledgeBase:
        return await scope.get(session, KnowledgeBase, knowledge_base_id)

    async def bases(
        self, session: AsyncSession, scope: TenantScope, ids: Sequence[uuid.UUID]
    ) -> Sequence[KnowledgeBase]:
        statement = scope.select(KnowledgeBase).where(KnowledgeBase.id.in_(list(ids)))
        return (await session.scalars(statement)).all()

    async def base_named(
        self, session: AsyncSession, scope: TenantScope, name: str
    ) -> KnowledgeBase | None:
        statement = scope.select(KnowledgeBase).where(KnowledgeBase.name == name)
        return await session.scalar(statement)

    def add(self, session: AsyncSession, scope: TenantScope, row: KnowledgeBase) -> KnowledgeBase:
        return scope.add(session, row)

    def add_document(
        self, session: AsyncSession, scope: TenantScope, row: KnowledgeDocument
    ) -> KnowledgeDocument:
        return scope.add(session, row)

    async def page_documents(
        self,
        session: AsyncSession,
        scope: TenantScope,
        knowledge_base_id: uuid.UUID,
        page: PageParams,
    ) -> tuple[Sequence[KnowledgeDocument], int]:
        statement = scope.select(KnowledgeDocument).where(
            KnowledgeDocument.knowledge_base_id == knowledge_base_id
        )
        return await paginate(
            session, statement, page, KnowledgeDocument.created_at, KnowledgeDocument.id
        )

    async def get_document(
        self,
        session: AsyncSession,
        scope: TenantScope,
        document_id: uuid.UUID,
        *,
        knowledge_base_id: uuid.UUID | None = None,
        with_content: bool = False,
    ) -> KnowledgeDocument | None:
        statement = scope.select(KnowledgeDocument).where(KnowledgeDocument.id == document_id)
        if knowledge_base_id is not None:
            statement = statement.where(KnowledgeDocument.knowledge_base_id == knowledge_base_id)
        if with_content:
            statement = statement.options(undefer(KnowledgeDocument.content))
        return await session.scalar(statement)

    async def document_by_hash(
        self, session: AsyncSession, scope: TenantScope, knowledge_base_id: uuid.UUID, sha256: str
    ) -> KnowledgeDocument | None:
        statement = scope.select(KnowledgeDocument).where(
            KnowledgeDocument.knowledge_base_id == knowledge_base_id,
            KnowledgeDocument.sha256 == sha256,
        )
        return await session.scalar(statement)

    async def scope_of_document(
        self, session: AsyncSession, document_id: uuid.UUID
    ) -> TenantScope | None:
        """The tenant a document belongs to, for a background job that holds only its id.

        The one unscoped read here: a job is trusted (it was enqueued by a scoped request)
        and everything it does after this goes through the returned scope.
        """
        tenant_id = await session.scalar(
            select(KnowledgeDocument.tenant_id).where(KnowledgeDocument.id == document_id)
        )
        return None if tenant_id is None else TenantScope(tenant_id)

    async def documents_after(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, TenantScope]]:
        """Every tenant's documents in id order, `limit` at a time, as (id, its scope): for
        `apiary encryption reencrypt` to walk. Ids only; each is then read through its scope."""
        statement = (
            select(KnowledgeDocument.id, KnowledgeDocument.tenant_id)
            .order_by(KnowledgeDocument.id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(KnowledgeDocument.id > after)
        rows = await session.execute(statement)
        return [(document_id, TenantScope(tenant_id)) for document_id, tenant_id in rows.all()]

    async def unfinished_document_ids(self, session: AsyncSession) -> list[uuid.UUID]:
        """Documents of every tenant still queued or processing, oldest first: the backlog
        a restarted process picks up. Ids only; each job then works through its scope."""
        statement = (
            select(KnowledgeDocument.id)
            .where(KnowledgeDocument.status.in_([DocumentStatus.QUEUED, DocumentStatus.PROCESSING]))
            .order_by(KnowledgeDocument.created_at)
        )
        return list((await session.scalars(statement)).all())

    async def add_event(
        self,
        session: AsyncSession,
        scope: TenantScope,
        document_id: uuid.UUID,
        type: str,
        data: dict[str, Any],
    ) -> KnowledgeDocumentEvent | None:
        """The document's next event, or None if the document is gone.

        The number comes from an increment of the document's row, which the database
        serializes: two runs of one document at once (a re-index while a run goes on) take
        turns instead of picking the same number, and the numbering survives restarts.
        """
        seq = await session.scalar(
            update(KnowledgeDocument)
            .where(
                KnowledgeDocument.tenant_id == scope.tenant_id, KnowledgeDocument.id == document_id
            )
            .values(last_event_seq=KnowledgeDocument.last_event_seq + 1)
            .returning(KnowledgeDocument.last_event_seq)
        )
        if seq is None:
            return None
        event = KnowledgeDocumentEvent(document_id=document_id, seq=seq, type=type, data=data)
        return scope.add(session, event)

    async def events_after(
        self,
        session: AsyncSession,
        scope: TenantScope,
        document_id: uuid.UUID,
        after: int,
        limit: int = 500,
    ) -> Sequence[KnowledgeDocumentEvent]:
        statement = (
            scope.select(KnowledgeDocumentEvent)
            .where(
                KnowledgeDocumentEvent.document_id == document_id,
                KnowledgeDocumentEvent.seq > after,
            )
            .order_by(KnowledgeDocumentEvent.seq)
            .limit(limit)
        )
        return (await session.scalars(statement)).all()


knowledge_repository = KnowledgeRepository()
