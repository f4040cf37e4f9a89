"""A document's ingestion progress as events: persisted with its step, then announced.

Each event is written in the same transaction as the document change it reports (status,
chunk counts), so a reader that sees a finished document also sees every event of its run.
Listeners are woken through the runtime's notifier, as for execution events (Redis pub/sub
in production, in process embedded); the rows are the stream, numbered per document, so
clients resume from any sequence number.
"""

from __future__ import annotations

import uuid
from enum import StrEnum


class DocumentEventType(StrEnum):
    QUEUED = "queued"  # uploaded or re-indexed: {"reindex"}
    EXTRACTING = "extracting"  # {"content_type", "size_bytes"}
    SPLITTING = "splitting"  # {"characters", "sections"}
    EMBEDDING = "embedding"  # batch k of n: {"batch", "batches", "chunks_done", "chunk_count"}
    UPSERTING = "upserting"  # the same fields, once the batch is embedded
    INDEXED = "indexed"  # {"chunk_count"}: searchable
    FAILED = "failed"  # {"reason"}: the document's `error`


def document_events_channel(document_id: uuid.UUID) -> str:
    return f"knowledge_document:{document_id}:events"
