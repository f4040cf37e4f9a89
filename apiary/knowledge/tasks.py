"""Ingestion: one document's bytes to stored, searchable chunks. A background job.

`ingest_document(deps, document_id)` takes an id, reloads everything, and is safe to
run twice or after a crash: it skips a document that is already `ready`, removes the
document's old points before writing, and point ids are fixed per (document, chunk), so a
second run overwrites rather than duplicates. Every step (extracting, splitting, embedding
and upserting batch k of n, indexed or failed with the reason) is an event committed with
the document's progress (`chunk_count`, `chunks_done`, `status`) and announced to the
event stream's listeners (events.py). A file that cannot be read ends `failed` with the
reason, touching nothing else in its knowledge base. Runs today on the in-process queue
(queue.py); the worker from the swarm branch can call the same function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import session_scope
from apiary.errors import ApiaryError, TooManyRequests
from apiary.knowledge.chunking import Chunk, split
from apiary.knowledge.embedding import Float32Array, embed_texts
from apiary.knowledge.errors import ExtractionError
from apiary.knowledge.events import DocumentEventType, document_events_channel
from apiary.knowledge.extract import ExtractionLimits, extract
from apiary.knowledge.models import CHUNK_TEXT, DOCUMENT_CONTENT, DocumentStatus
from apiary.knowledge.repository import knowledge_repository
from apiary.knowledge.sparse import SparseVector, document_vector
from apiary.knowledge.vectors import ChunkPoint
from apiary.observability import tracing

if TYPE_CHECKING:
    from apiary.knowledge.deps import IngestDeps

log = logging.getLogger("apiary.knowledge.ingest")


class _DocumentGone(Exception):
    """The document (or its knowledge base) was deleted while it was being ingested."""


@dataclass(frozen=True, slots=True)
class _Job:
    scope: TenantScope
    document_id: uuid.UUID
    knowledge_base_id: uuid.UUID
    filename: str
    content_type: str
    content: bytes  # as stored: encrypted when encryption at rest is on
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    created_by: uuid.UUID | None


async def _claim(deps: IngestDeps, document_id: uuid.UUID) -> _Job | None:
    async with session_scope(deps.session_factory) as session:
        scope = await knowledge_repository.scope_of_document(session, document_id)
        if scope is None:
            return None
        document = await knowledge_repository.get_document(
            session, scope, document_id, with_content=True
        )
        if document is None or document.status == DocumentStatus.READY:
            return None
        base = await knowledge_repository.get_base(session, scope, document.knowledge_base_id)
        document.status = DocumentStatus.PROCESSING
        document.error = None
        document.chunks_done = 0
        await knowledge_repository.add_event(
            session,
            scope,
            document.id,
            DocumentEventType.EXTRACTING,
            {"content_type": document.content_type, "size_bytes": document.size_bytes},
        )
        job = _Job(
            scope=scope,
            document_id=document.id,
            knowledge_base_id=base.id,
            filename=document.filename,
            content_type=document.content_type,
            content=document.content,
            embedding_model=base.embedding_model,
            chunk_size=base.chunk_size,
            chunk_overlap=base.chunk_overlap,
            created_by=document.created_by,
        )
    await deps.notifier.notify(document_events_channel(document_id))
    return job


async def _step(
    deps: IngestDeps,
    job: _Job,
    event: DocumentEventType,
    data: dict[str, Any],
    **fields: object,
) -> None:
    """Record one step: its event and the document's new fields in one transaction, then
    wake the event stream's listeners."""
    async with session_scope(deps.session_factory) as session:
        document = await knowledge_repository.get_document(session, job.scope, job.document_id)
        if document is None:
            raise _DocumentGone
        for name, value in fields.items():
            setattr(document, name, value)
        await knowledge_repository.add_event(session, job.scope, job.document_id, event, data)
    await deps.notifier.notify(document_events_channel(job.document_id))


async def ingest_document(deps: IngestDeps, document_id: uuid.UUID) -> None:
    # A trace of its own: the upload was answered long ago (its id is on the span).
    attributes = {"apiary.document_id": str(document_id)}
    with tracing.span("apiary.knowledge.ingest", attributes=attributes) as span:
        await _ingest(deps, document_id, span)


async def _ingest(deps: IngestDeps, document_id: uuid.UUID, span: tracing.Span | None) -> None:
    job = await _claim(deps, document_id)
    if job is None:
        return
    vectors = deps.vectors
    try:
        content = await deps.encryption.decrypt(
            job.scope.tenant_id, job.content, purpose=DOCUMENT_CONTENT
        )
        limits = ExtractionLimits.of(deps.settings.knowledge)
        read = {"apiary.bytes": len(content)}
        with tracing.span("apiary.knowledge.extract", attributes=read):
            extracted = await asyncio.to_thread(extract, content, job.filename, limits=limits)
        await _step(
            deps,
            job,
            DocumentEventType.SPLITTING,
            {"characters": len(extracted.text), "sections": len(extracted.sections)},
        )
        with tracing.span("apiary.knowledge.split") as step:
            chunks = split(extracted, chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap)
            if step is not None:
                step.set_attribute("apiary.chunks", len(chunks))
        await vectors.delete_document(job.scope, job.document_id)
        # The job acts for the uploader within the document's tenant: a gateway embedding
        # model's cost lands on that tenant's ledger.
        auth = AuthContext(
            role=Role.DEVELOPER, tenant_id=job.scope.tenant_id, actor=Actor(user_id=job.created_by)
        )
        batch_size = deps.settings.knowledge.embed_batch_size
        waits = _RateLimitWaits(deps.settings.knowledge.embed_rate_limit_wait_s)
        batches = -(-len(chunks) // batch_size)
        for number, start in enumerate(range(0, len(chunks), batch_size), start=1):
            batch = chunks[start : start + batch_size]
            progress = {
                "batch": number,
                "batches": batches,
                "chunks_done": start,
                "chunk_count": len(chunks),
            }
            # chunks_done rides on the next step's transaction: the previous batch is stored.
            await _step(
                deps,
                job,
                DocumentEventType.EMBEDDING,
                progress,
                chunk_count=len(chunks),
                chunks_done=start,
            )
            batch_attributes = {"apiary.batch": number, "apiary.chunks": len(batch)}
            with tracing.span("apiary.knowledge.embed", attributes=batch_attributes):
                dense, sparse = await _embed(deps, job, auth, batch, waits=waits)
            await _step(deps, job, DocumentEventType.UPSERTING, progress)
            with tracing.span("apiary.knowledge.upsert", attributes=batch_attributes):
                points = await _points(deps, job, batch)
                await deps.vectors.upsert(job.scope, points, dense, sparse)
        await _step(
            deps,
            job,
            DocumentEventType.INDEXED,
            {"chunk_count": len(chunks)},
            status=DocumentStatus.READY,
            chunk_count=len(chunks),
            chunks_done=len(chunks),
        )
    except _DocumentGone:
        await vectors.delete_document(job.scope, job.document_id)
    except (ExtractionError, ApiaryError) as error:
        if span is not None:
            tracing.record_error(span, error)
        await _fail(deps, job, str(error) if isinstance(error, ExtractionError) else error.detail)
    except Exception as error:
        log.exception("ingestion failed", extra={"document_id": str(job.document_id)})
        if span is not None:
            tracing.record_error(span, error)
        await _fail(deps, job, f"internal error while ingesting ({type(error).__name__})")
    else:
        # Deleted between the last update and now: its points must not outlive it.
        async with session_scope(deps.session_factory) as session:
            gone = (
                await knowledge_repository.get_document(session, job.scope, job.document_id)
            ) is None
        if gone:
            await vectors.delete_document(job.scope, job.document_id)


@dataclass(slots=True)
class _RateLimitWaits:
    """How long one document has waited on rate limits, against its bound."""

    limit_s: float
    waited_s: float = 0.0


async def _embed(
    deps: IngestDeps,
    job: _Job,
    auth: AuthContext,
    batch: list[Chunk],
    *,
    waits: _RateLimitWaits,
) -> tuple[Float32Array, list[SparseVector]]:
    """One batch's vectors. A gateway model is a billed call under the tenant's rate limits,
    and a large document needs more calls than an RPM allows in a minute: a 429 waits the
    Retry-After it gives and calls again, until the document has waited `limit_s` in all."""
    texts = [chunk.indexed_text for chunk in batch]
    while True:
        try:
            dense = await embed_texts(deps, auth, job.embedding_model, texts)
        except ApiaryError as error:
            if error.status_code != 429:
                raise
            retry_after_s = _retry_after_s(error)
            if waits.waited_s + retry_after_s > waits.limit_s:
                raise TooManyRequests(
                    f"embedding stopped: {error.detail}, and this document already waited "
                    f"{waits.waited_s:.0f} s for it (at most {waits.limit_s:.0f} s, "
                    "APIARY_KNOWLEDGE__EMBED_RATE_LIMIT_WAIT_S); raise the limit or upload "
                    "the document again later",
                    retry_after_s=int(retry_after_s),
                ) from None
            log.info(
                "embedding rate limited; waiting",
                extra={"document_id": str(job.document_id), "retry_after_s": retry_after_s},
            )
            await asyncio.sleep(retry_after_s)
            waits.waited_s += retry_after_s
        else:
            return dense, [document_vector(text) for text in texts]


def _retry_after_s(error: ApiaryError) -> float:
    """The wait a 429 asks for: its Retry-After (whole seconds), at least one second."""
    try:
        return max(1.0, float(error.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


async def _points(deps: IngestDeps, job: _Job, batch: list[Chunk]) -> list[ChunkPoint]:
    # The chunk's text is sealed like the document it comes from: a copy of the vector
    # store's volume holds vectors and citations, not the text.
    tenant_id = job.scope.tenant_id
    texts = [
        await deps.encryption.encrypt_text(tenant_id, chunk.text, purpose=CHUNK_TEXT)
        for chunk in batch
    ]
    return [
        ChunkPoint(
            knowledge_base_id=job.knowledge_base_id,
            document_id=job.document_id,
            filename=job.filename,
            content_type=job.content_type,
            chunk_index=chunk.index,
            text=text,
            page=chunk.page,
            section=chunk.section,
            char_start=chunk.char_start,
            char_end=chunk.char_end,
        )
        for chunk, text in zip(batch, texts, strict=True)
    ]


async def _fail(deps: IngestDeps, job: _Job, reason: str) -> None:
    await deps.vectors.delete_document(job.scope, job.document_id)
    reason = reason[:2000]
    with contextlib.suppress(_DocumentGone):
        await _step(
            deps,
            job,
            DocumentEventType.FAILED,
            {"reason": reason},
            status=DocumentStatus.FAILED,
            error=reason,
        )
