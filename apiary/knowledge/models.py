"""Knowledge bases and their documents. Chunks live in Qdrant (text and citation in the
payload); the database keeps what the API lists and what ingestion needs to start again."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin

BUNDLED_EMBEDDING_MODEL = "minilm"  # all-MiniLM-L6-v2, in process, no provider call
# What a document's stored bytes are, to the encryption at rest (bound into the ciphertext).
DOCUMENT_CONTENT = "knowledge_document.content"
CHUNK_TEXT = "knowledge_chunk.text"  # a chunk's text in the vector store's payload


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (DocumentStatus.READY, DocumentStatus.FAILED)


class KnowledgeBase(IdMixin, TenantOwned, Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # "minilm" (bundled) or a gateway model name whose provider embeds (costs in the ledger).
    embedding_model: Mapped[str] = mapped_column(String(200), default=BUNDLED_EMBEDDING_MODEL)
    chunk_size: Mapped[int] = mapped_column(Integer, default=800)  # characters
    chunk_overlap: Mapped[int] = mapped_column(Integer, default=120)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class KnowledgeDocument(IdMixin, TenantOwned, Base):
    __tablename__ = "knowledge_documents"
    # The same bytes uploaded twice into one knowledge base are one document.
    __table_args__ = (UniqueConstraint("knowledge_base_id", "sha256"),)

    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=DocumentStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)  # known once split
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)  # embedded and stored so far
    last_event_seq: Mapped[int] = mapped_column(Integer, default=0)  # its events' numbering
    # The uploaded bytes, so any worker (not only the one that took the upload) can ingest
    # or re-index them; deferred so lists never load them. Encrypted with the tenant's data
    # key (apiary/crypto/) when encryption at rest is configured.
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class KnowledgeDocumentEvent(IdMixin, TenantOwned, Base):
    """One step of a document's ingestion, numbered 1, 2, 3... within the document (a
    re-index continues the numbering), so a client can resume its stream from any step."""

    __tablename__ = "knowledge_document_events"
    __table_args__ = (
        UniqueConstraint("document_id", "seq", name="uq_knowledge_document_events_seq"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_documents.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
