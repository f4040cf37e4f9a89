"""Routes under /api/v1/knowledge-bases: knowledge bases, their documents, and search."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Request, Response, status
from starlette.datastructures import UploadFile

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.db import session_scope
from apiary.errors import NotFound, Unprocessable, documented
from apiary.kit.follow import Read, follow
from apiary.kit.schemas import Page, Paging, page_of
from apiary.kit.sse import (
    After,
    EncodedEvent,
    EventStreamResponse,
    event_stream_response,
    resume_point,
)
from apiary.knowledge import service
from apiary.knowledge.errors import PayloadTooLarge
from apiary.knowledge.events import document_events_channel
from apiary.knowledge.extract import SUPPORTED
from apiary.knowledge.models import DocumentStatus
from apiary.knowledge.schemas import (
    Document,
    DocumentEvent,
    KnowledgeBase,
    KnowledgeBaseCreate,
    SearchRequest,
    SearchResults,
)
from apiary.knowledge.service import knowledge_service
from apiary.runtime import Runtime, RuntimeDep

router = APIRouter(prefix="/knowledge-bases", tags=["knowledge"])

Reader = Annotated[AuthContext, authorize(Permission.KNOWLEDGE_READ)]
Writer = Annotated[AuthContext, authorize(Permission.KNOWLEDGE_WRITE)]

# Room for the multipart envelope around the file when checking Content-Length up front.
_MULTIPART_OVERHEAD = 64 * 1024
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"one of {SUPPORTED}",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a knowledge base",
    responses=documented(402, 409),
)
async def create_base(
    auth: Writer, session: DbSession, runtime: RuntimeDep, body: KnowledgeBaseCreate
) -> KnowledgeBase:
    return KnowledgeBase.model_validate(
        await knowledge_service.create(session, runtime.providers, auth, body)
    )


@router.get("", summary="List knowledge bases")
async def list_bases(auth: Reader, session: DbSession, page: Paging) -> Page[KnowledgeBase]:
    rows, total = await knowledge_service.list(session, auth, page)
    return page_of(KnowledgeBase, rows, total, page)


@router.get("/{kb_id}", summary="Get a knowledge base")
async def get_base(auth: Reader, session: DbSession, kb_id: uuid.UUID) -> KnowledgeBase:
    return KnowledgeBase.model_validate(await knowledge_service.get(session, auth, kb_id))


@router.delete(
    "/{kb_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a knowledge base, its documents and every vector",
)
async def delete_base(
    auth: Writer, session: DbSession, runtime: RuntimeDep, kb_id: uuid.UUID
) -> None:
    await knowledge_service.delete(session, runtime.vectors, auth, kb_id)


@router.post(
    "/{kb_id}/documents",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a document (multipart field 'file'); 200 with the existing one if the "
    "same content is already there",
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"model": Document, "description": "The same content, already uploaded"},
        **documented(402, 409, 413),
    },
)
async def upload_document(
    auth: Writer,
    session: DbSession,
    runtime: RuntimeDep,
    kb_id: uuid.UUID,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> Document:
    # The form is parsed here, after the knowledge base is found, so another tenant's id is
    # a 404 whatever the body, and an oversized body is refused before it is read.
    await knowledge_service.get(session, auth, kb_id)
    limit = runtime.settings.knowledge.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            f"the upload is {int(declared)} bytes; the limit is {limit} bytes "
            "(APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES)"
        )
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Unprocessable("send the document as the multipart form field 'file'")
    filename = PurePosixPath(upload.filename.replace("\\", "/")).name[:255]
    content = await upload.read(limit + 1)
    document, created = await knowledge_service.upload(
        session,
        auth,
        kb_id,
        filename=filename,
        content=content,
        max_bytes=limit,
        sealer=runtime.encryption,
    )
    if created:
        background.add_task(runtime.ingestion.enqueue, document.id)  # after the commit
    else:
        response.status_code = status.HTTP_200_OK
    return Document.model_validate(document)


@router.get("/{kb_id}/documents", summary="List documents with their ingestion status")
async def list_documents(
    auth: Reader, session: DbSession, kb_id: uuid.UUID, page: Paging
) -> Page[Document]:
    rows, total = await knowledge_service.list_documents(session, auth, kb_id, page)
    return page_of(Document, rows, total, page)


@router.get("/{kb_id}/documents/{document_id}", summary="Get a document and its progress")
async def get_document(
    auth: Reader, session: DbSession, kb_id: uuid.UUID, document_id: uuid.UUID
) -> Document:
    return Document.model_validate(
        await knowledge_service.get_document(session, auth, kb_id, document_id)
    )


def _document_events(
    runtime: Runtime, auth: AuthContext, kb_id: uuid.UUID, document_id: uuid.UUID, after: int
) -> AsyncIterator[list[EncodedEvent] | None]:
    """Events after `after`, live, until the document is ready or failed (or deleted);
    None marks an idle interval. A document's events commit with its status, so a read
    that finds it finished has them all."""

    async def read(after: int) -> Read | None:
        try:
            async with session_scope(runtime.session_factory) as session:
                document, rows = await knowledge_service.events(
                    session, auth, kb_id, document_id, after=after
                )
                finished = DocumentStatus(document.status).finished
        except NotFound:
            return None  # deleted while streaming
        return Read([EncodedEvent.of(DocumentEvent.model_validate(row)) for row in rows], finished)

    return follow(runtime.notifier, document_events_channel(document_id), read, after)


@router.get(
    "/{kb_id}/documents/{document_id}/events",
    summary="Ingestion progress as Server-Sent Events; resume with Last-Event-ID or ?after=",
    response_class=EventStreamResponse,
    responses={200: {"model": DocumentEvent, "description": "each `data:` is one event"}},
)
async def document_events(
    auth: Reader,
    session: DbSession,
    runtime: RuntimeDep,
    kb_id: uuid.UUID,
    document_id: uuid.UUID,
    after: After = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStreamResponse:
    """Every step of the document's ingestion (queued, extracting, splitting, embedding and
    upserting batch k of n, then indexed or failed with the reason), from the first or
    after `after`, then live until the document is ready or failed."""
    await knowledge_service.get_document(session, auth, kb_id, document_id)  # 404 first
    start = resume_point(after, last_event_id)
    return event_stream_response(_document_events(runtime, auth, kb_id, document_id, start))


@router.post(
    "/{kb_id}/documents/{document_id}/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Extract, split and embed the document again",
)
async def reindex_document(
    auth: Writer,
    session: DbSession,
    runtime: RuntimeDep,
    kb_id: uuid.UUID,
    document_id: uuid.UUID,
    background: BackgroundTasks,
) -> Document:
    document = await knowledge_service.reindex(session, auth, kb_id, document_id)
    background.add_task(runtime.ingestion.enqueue, document.id)
    return Document.model_validate(document)


@router.delete(
    "/{kb_id}/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a document and its vectors",
)
async def delete_document(
    auth: Writer,
    session: DbSession,
    runtime: RuntimeDep,
    kb_id: uuid.UUID,
    document_id: uuid.UUID,
) -> None:
    await knowledge_service.delete_document(session, runtime.vectors, auth, kb_id, document_id)


@router.post("/{kb_id}/search", summary="Search passages, with citations")
async def search(
    auth: Reader, runtime: RuntimeDep, kb_id: uuid.UUID, body: SearchRequest
) -> SearchResults:
    hits = await service.search(
        runtime,
        auth,
        [kb_id],
        body.query,
        body.top_k,
        mode=body.mode,
        document_ids=body.filters.document_ids if body.filters else None,
    )
    return SearchResults(query=body.query, mode=body.mode, results=hits)
