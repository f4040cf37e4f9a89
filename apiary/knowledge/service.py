"""Knowledge bases and documents: business rules, and `search`, the retrieval entry point.

`search(deps, auth, knowledge_base_ids, query, top_k)` is what the REST search route
and the swarm's `knowledge_search` tool call: the tenant comes from `auth` (never from the
caller's arguments or a model's output), knowledge bases of another tenant are not found,
and the vector store adds the tenant filter itself.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.authz.permissions import Permission
from apiary.billing.entitlements import check_knowledge_base, check_storage
from apiary.db import session_scope
from apiary.errors import Conflict, Forbidden, NotFound, Unprocessable
from apiary.kit.schemas import PageParams
from apiary.knowledge.errors import PayloadTooLarge
from apiary.knowledge.events import DocumentEventType
from apiary.knowledge.extract import detect_format
from apiary.knowledge.models import (
    BUNDLED_EMBEDDING_MODEL,
    CHUNK_TEXT,
    DOCUMENT_CONTENT,
    DocumentStatus,
    KnowledgeBase,
    KnowledgeDocument,
    KnowledgeDocumentEvent,
)
from apiary.knowledge.repository import knowledge_repository
from apiary.knowledge.schemas import Citation, KnowledgeBaseCreate, SearchHit
from apiary.knowledge.sparse import query_vector
from apiary.knowledge.vectors import SearchMode, VectorHit

if TYPE_CHECKING:
    from apiary.crypto.keyring import Sealer
    from apiary.gateway.chain import ProviderChain
    from apiary.knowledge.deps import SearchDeps
    from apiary.knowledge.vectors import VectorStore

# Reciprocal Rank Fusion across embedding models: the constant of the RRF paper. (Within one
# model, Qdrant fuses dense and keyword with its own default, k = 2; see local_index.py.)
_RRF_K = 60


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


class KnowledgeService:
    async def create(
        self,
        session: AsyncSession,
        providers: ProviderChain,
        auth: AuthContext,
        body: KnowledgeBaseCreate,
    ) -> KnowledgeBase:
        """A knowledge base; `providers` tells whether a non-bundled embedding model is served."""
        scope = auth.scope
        if body.embedding_model != BUNDLED_EMBEDDING_MODEL:
            from apiary.gateway.client import decide

            try:
                decide(providers, {"model": body.embedding_model})
            except NotFound:
                raise Unprocessable(
                    f"embedding_model: {body.embedding_model!r} is neither "
                    f"{BUNDLED_EMBEDDING_MODEL!r} nor a model the gateway serves"
                ) from None
        if await knowledge_repository.base_named(session, scope, body.name) is not None:
            raise Conflict(f"a knowledge base named {body.name!r} already exists")
        await check_knowledge_base(session, scope)
        base = knowledge_repository.add(
            session,
            scope,
            KnowledgeBase(
                name=body.name,
                description=body.description,
                embedding_model=body.embedding_model,
                chunk_size=body.chunk_size,
                chunk_overlap=body.chunk_overlap,
                created_by=auth.user_id,
            ),
        )
        await session.flush()
        await audit_service.record(
            session,
            action="knowledge_base.created",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="knowledge_base",
            target_id=base.id,
            details={"name": base.name, "embedding_model": base.embedding_model},
        )
        return base

    async def list(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[Sequence[KnowledgeBase], int]:
        return await knowledge_repository.page_bases(session, auth.scope, page)

    async def get(
        self, session: AsyncSession, auth: AuthContext, knowledge_base_id: uuid.UUID
    ) -> KnowledgeBase:
        return await knowledge_repository.get_base(session, auth.scope, knowledge_base_id)

    async def delete(
        self,
        session: AsyncSession,
        vectors: VectorStore,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
    ) -> None:
        """Remove the knowledge base, its documents (cascade) and every one of its vectors."""
        base = await knowledge_repository.get_base(session, auth.scope, knowledge_base_id)
        await session.delete(base)
        await session.flush()
        await audit_service.record(
            session,
            action="knowledge_base.deleted",
            actor=auth.actor,
            tenant_id=auth.scope.tenant_id,
            target_type="knowledge_base",
            target_id=base.id,
            details={"name": base.name},
        )
        # After the rows are gone in this transaction: an ingestion still running notices
        # its document is gone and removes what it wrote (tasks.py).
        await vectors.delete_knowledge_base(auth.scope, base.id)

    async def upload(
        self,
        session: AsyncSession,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        *,
        filename: str,
        content: bytes,
        max_bytes: int,
        sealer: Sealer,
    ) -> tuple[KnowledgeDocument, bool]:
        """The new document (queued) and True, or the existing one with the same bytes and
        False: uploading the same content again never duplicates its chunks. The bytes are
        stored encrypted with the tenant's data key (`sealer`); the digest that finds the
        same content again is of the plaintext."""
        scope = auth.scope
        base = await knowledge_repository.get_base(session, scope, knowledge_base_id)
        if len(content) > max_bytes:
            raise PayloadTooLarge(
                f"{filename!r} is {_megabytes(len(content))}; the upload limit is "
                f"{_megabytes(max_bytes)} (APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES)"
            )
        _, content_type = detect_format(filename)
        if not content:
            raise Unprocessable(f"{filename!r} is empty")
        sha256 = hashlib.sha256(content).hexdigest()
        existing = await knowledge_repository.document_by_hash(session, scope, base.id, sha256)
        if existing is not None:
            return existing, False
        await check_storage(session, scope, adding=len(content))
        # Before this transaction writes: a tenant's first data key is committed in a
        # transaction of its own (on SQLite, while this one holds no write lock).
        stored = await sealer.encrypt(scope.tenant_id, content, purpose=DOCUMENT_CONTENT)
        document = knowledge_repository.add_document(
            session,
            scope,
            KnowledgeDocument(
                knowledge_base_id=base.id,
                filename=filename,
                content_type=content_type,
                sha256=sha256,
                size_bytes=len(content),
                status=DocumentStatus.QUEUED,
                content=stored,
                created_by=auth.user_id,
                chunk_count=0,
                chunks_done=0,
            ),
        )
        await session.flush()
        await knowledge_repository.add_event(
            session, scope, document.id, DocumentEventType.QUEUED, {"reindex": False}
        )
        await audit_service.record(
            session,
            action="knowledge_document.uploaded",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="knowledge_document",
            target_id=document.id,
            details={"knowledge_base_id": str(base.id), "filename": filename, "sha256": sha256},
        )
        return document, True

    async def list_documents(
        self,
        session: AsyncSession,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        page: PageParams,
    ) -> tuple[Sequence[KnowledgeDocument], int]:
        base = await knowledge_repository.get_base(session, auth.scope, knowledge_base_id)
        return await knowledge_repository.page_documents(session, auth.scope, base.id, page)

    async def get_document(
        self,
        session: AsyncSession,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        document_id: uuid.UUID,
    ) -> KnowledgeDocument:
        document = await knowledge_repository.get_document(
            session, auth.scope, document_id, knowledge_base_id=knowledge_base_id
        )
        if document is None:
            raise NotFound(f"document {document_id} not found")
        return document

    async def reindex(
        self,
        session: AsyncSession,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        document_id: uuid.UUID,
    ) -> KnowledgeDocument:
        """Queue the document to be extracted, split and embedded again (enqueue after commit)."""
        document = await self.get_document(session, auth, knowledge_base_id, document_id)
        document.status = DocumentStatus.QUEUED
        document.error = None
        document.chunks_done = 0
        await session.flush()
        await knowledge_repository.add_event(
            session, auth.scope, document.id, DocumentEventType.QUEUED, {"reindex": True}
        )
        return document

    async def events(
        self,
        session: AsyncSession,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        document_id: uuid.UUID,
        *,
        after: int,
    ) -> tuple[KnowledgeDocument, Sequence[KnowledgeDocumentEvent]]:
        """The document and its events numbered after `after`. The document is read first:
        its events are committed with its status, so a finished status read here means
        the events read next include the last one of its run."""
        document = await self.get_document(session, auth, knowledge_base_id, document_id)
        rows = await knowledge_repository.events_after(session, auth.scope, document.id, after)
        return document, rows

    async def delete_document(
        self,
        session: AsyncSession,
        vectors: VectorStore,
        auth: AuthContext,
        knowledge_base_id: uuid.UUID,
        document_id: uuid.UUID,
    ) -> None:
        document = await self.get_document(session, auth, knowledge_base_id, document_id)
        await session.delete(document)
        await session.flush()
        await audit_service.record(
            session,
            action="knowledge_document.deleted",
            actor=auth.actor,
            tenant_id=auth.scope.tenant_id,
            target_type="knowledge_document",
            target_id=document.id,
            details={"knowledge_base_id": str(knowledge_base_id), "filename": document.filename},
        )
        await vectors.delete_document(auth.scope, document.id)


knowledge_service = KnowledgeService()


async def reencrypt_documents(
    session_factory: async_sessionmaker[AsyncSession], sealer: Sealer, *, batch: int = 50
) -> int:
    """Encrypt every document's stored bytes with its tenant's newest data key, where they
    are not already (uploaded before encryption was configured, or under a data key version
    a rotation replaced); how many were rewritten. Safe to run again, and while serving."""
    rewritten = 0
    after: uuid.UUID | None = None
    while True:
        async with session_factory() as session:
            page = await knowledge_repository.documents_after(session, after, batch)
        for document_id, scope in page:
            async with session_scope(session_factory) as session:
                document = await knowledge_repository.get_document(
                    session, scope, document_id, with_content=True
                )
                if document is None:
                    continue  # deleted meanwhile
                resealed = await sealer.reseal(
                    scope.tenant_id, document.content, purpose=DOCUMENT_CONTENT
                )
                if resealed is not None:
                    document.content = resealed
                    rewritten += 1
        if len(page) < batch:
            return rewritten
        after = page[-1][0]


async def search(
    deps: SearchDeps,
    auth: AuthContext,
    knowledge_base_ids: Sequence[uuid.UUID],
    query: str,
    top_k: int = 5,
    *,
    mode: SearchMode = "hybrid",
    document_ids: Sequence[uuid.UUID] | None = None,
) -> list[SearchHit]:
    """The `top_k` passages of these knowledge bases that best answer `query`, with citations.

    For the REST route and the agents' `knowledge_search` tool alike. The tenant is
    `auth`'s: a knowledge base id of another tenant (or one that does not exist) is a
    `NotFound`, exactly as over the API. Hybrid mode fuses dense (embedding) and keyword
    (BM25) rankings with Reciprocal Rank Fusion; dense mode ranks by cosine alone.
    Knowledge bases with different embedding models are searched per model and their
    rankings fused the same way. Opens its own short database session.
    """
    if not auth.can(Permission.KNOWLEDGE_READ):
        raise Forbidden(f"role {auth.role.value!r} lacks permission 'knowledge:read'")
    scope = auth.scope
    wanted = list(dict.fromkeys(knowledge_base_ids))
    if not wanted:
        return []
    async with deps.session_factory() as session:
        bases = await knowledge_repository.bases(session, scope, wanted)
    missing = set(wanted) - {base.id for base in bases}
    if missing:
        raise NotFound(f"knowledge base {sorted(map(str, missing))[0]} not found")
    by_model: dict[str, list[uuid.UUID]] = defaultdict(list)
    for base in bases:
        by_model[base.embedding_model].append(base.id)
    sparse = query_vector(query)
    rankings: list[list[VectorHit]] = []
    for model, ids in by_model.items():
        from apiary.knowledge.embedding import embed_texts  # numpy and the model: on first use

        dense = (await embed_texts(deps, auth, model, [query]))[0]
        rankings.append(
            await deps.vectors.search(
                scope,
                knowledge_base_ids=ids,
                dense=dense,
                sparse=sparse if mode == "hybrid" else None,
                limit=top_k,
                mode=mode,
                document_ids=document_ids,
            )
        )
    hits = rankings[0] if len(rankings) == 1 else _fuse(rankings, top_k)
    return [await _hit(deps.encryption, scope.tenant_id, hit) for hit in hits]


def passages_for_agent(hits: Sequence[SearchHit]) -> str:
    """Search results as an agent's tool output: numbered passages, each with its source,
    so the model can cite `[n]` and the synthesis can map `[n]` back to `hits[n - 1]`."""
    if not hits:
        return "No passages found."
    blocks = []
    for number, hit in enumerate(hits, start=1):
        citation = hit.citation
        where = [citation.filename]
        if citation.page is not None:
            where.append(f"page {citation.page}")
        if citation.section:
            where.append(f"section {citation.section!r}")
        blocks.append(f"[{number}] ({', '.join(where)})\n{hit.text}")
    return "\n\n".join(blocks)


def _fuse(rankings: list[list[VectorHit]], top_k: int) -> list[VectorHit]:
    scores: dict[str, float] = defaultdict(float)
    found: dict[str, VectorHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            scores[hit.id] += 1 / (_RRF_K + rank + 1)
            found[hit.id] = hit
    best = sorted(scores, key=lambda hit_id: -scores[hit_id])[:top_k]
    return [
        VectorHit(id=hit_id, score=scores[hit_id], payload=found[hit_id].payload) for hit_id in best
    ]


async def _hit(sealer: Sealer, tenant_id: uuid.UUID, hit: VectorHit) -> SearchHit:
    payload = hit.payload
    # Chunks indexed before encryption was configured read as they are.
    text = await sealer.decrypt_text(tenant_id, payload["text"], purpose=CHUNK_TEXT)
    return SearchHit(
        chunk_id=hit.id,
        knowledge_base_id=uuid.UUID(payload["knowledge_base_id"]),
        score=hit.score,
        text=text,
        citation=Citation(
            document_id=uuid.UUID(payload["document_id"]),
            filename=payload["filename"],
            page=payload["page"],
            section=payload["section"],
            char_start=payload["char_start"],
            char_end=payload["char_end"],
        ),
    )
