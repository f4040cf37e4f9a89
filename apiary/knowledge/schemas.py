"""API schemas for knowledge bases, documents and search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from apiary.kit.schemas import PlainLine, Schema, Text
from apiary.knowledge.models import BUNDLED_EMBEDDING_MODEL


class KnowledgeBase(Schema):
    id: uuid.UUID
    name: str
    description: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    created_by: uuid.UUID | None
    created_at: datetime


class KnowledgeBaseCreate(Schema):
    name: PlainLine = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        min_length=1,
        max_length=200,
        description='"minilm" (bundled, offline) or a gateway model that embeds',
    )
    chunk_size: int = Field(default=800, ge=100, le=8000, description="characters per chunk")
    chunk_overlap: int = Field(default=120, ge=0, le=2000, description="characters shared")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> KnowledgeBaseCreate:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class Document(Schema):
    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    filename: str
    content_type: str
    sha256: str
    size_bytes: int
    status: Literal["queued", "processing", "ready", "failed"]
    error: str | None
    chunk_count: int
    chunks_done: int
    created_at: datetime


class DocumentEvent(Schema):
    """One step of a document's ingestion, as the event stream sends it."""

    seq: int = Field(description="1, 2, 3... within the document; a re-index continues it")
    type: Literal[
        "queued", "extracting", "splitting", "embedding", "upserting", "indexed", "failed"
    ]
    data: dict[str, Any] = Field(
        description="embedding/upserting: batch, batches, chunks_done, chunk_count; "
        "indexed: chunk_count; failed: reason"
    )
    created_at: datetime


class SearchFilters(Schema):
    document_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)


class SearchRequest(Schema):
    query: Text = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: Literal["hybrid", "dense"] = "hybrid"
    filters: SearchFilters | None = None


class Citation(Schema):
    document_id: uuid.UUID
    filename: str
    page: int | None = Field(description="1-based page, PDFs only")
    section: str | None = Field(description='headings above the passage, "A > B"')
    char_start: int = Field(description="span in the document's extracted text")
    char_end: int


class SearchHit(Schema):
    chunk_id: str
    knowledge_base_id: uuid.UUID
    score: float = Field(description="fused RRF score (hybrid) or cosine similarity (dense)")
    text: str
    citation: Citation


class SearchResults(Schema):
    query: str
    mode: Literal["hybrid", "dense"]
    results: list[SearchHit]
