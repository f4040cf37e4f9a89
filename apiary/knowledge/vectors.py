"""The Qdrant vector store, and the vector side's one tenant-scoping choke point.

Chunks of every tenant share one collection per embedding width (`apiary_knowledge_384`
for MiniLM), as Qdrant's multitenancy guide recommends: a `tenant_id` payload field with a
tenant keyword index (`is_tenant=True`), plus `knowledge_base_id` and `document_id`. Every
method takes a `TenantScope` and builds its filter through `_scoped`, which always puts the
tenant condition first; callers pass knowledge-base and document conditions, never the
tenant. Each point carries a dense vector and a BM25-style sparse one (see sparse.py);
hybrid search prefetches both and fuses them with Reciprocal Rank Fusion in Qdrant.

Embedded, Qdrant runs in local mode in a folder of the data dir, which one process may open
at a time; the client is opened on first use (so `apiary init` and other CLI commands never
take the lock) and its calls run on a worker thread, one at a time, because local mode does
its search in Python. In production the same calls go to `APIARY_QDRANT_URL`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict, TypeVar, cast

from apiary.authz.scope import TenantScope
from apiary.kit.lazy import LazyModule
from apiary.knowledge.sparse import SparseVector

if TYPE_CHECKING:
    import numpy
    import numpy.typing as npt
    from qdrant_client import QdrantClient, models
else:  # qdrant-client is imported when knowledge bases are first used, not at start-up
    models = LazyModule("qdrant_client.models")

COLLECTION_PREFIX = "apiary_knowledge_"
DENSE = "dense"
SPARSE = "sparse"
SearchMode = Literal["hybrid", "dense"]
# Candidates each arm of a hybrid search hands to the fusion, per result asked for.
_PREFETCH_FACTOR = 4
_PREFETCH_MIN = 20

T = TypeVar("T")
log = logging.getLogger("apiary.knowledge.vectors")


class ChunkPayload(TypedDict):
    tenant_id: str
    knowledge_base_id: str
    document_id: str
    filename: str
    content_type: str
    chunk_index: int
    text: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class ChunkPoint:
    """One chunk ready to store: its payload (the tenant is stamped by the store)."""

    knowledge_base_id: uuid.UUID
    document_id: uuid.UUID
    filename: str
    content_type: str
    chunk_index: int
    text: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float
    payload: ChunkPayload


def point_id(document_id: uuid.UUID, chunk_index: int) -> str:
    """Stable per chunk, so re-running an ingestion overwrites instead of duplicating."""
    return str(uuid.uuid5(document_id, f"chunk-{chunk_index}"))


def collection_name(dimensions: int) -> str:
    return f"{COLLECTION_PREFIX}{dimensions}"


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _match_any(key: str, values: Sequence[str]) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))


def _scoped(scope: TenantScope, *conditions: models.Condition) -> models.Filter:
    """THE choke point: every filter this store sends starts with the caller's tenant."""
    return models.Filter(must=[_match("tenant_id", str(scope.tenant_id)), *conditions])


class VectorStore:
    def __init__(
        self, *, url: str | None, api_key: str | None = None, path: Path | None = None
    ) -> None:
        if url is None and path is None:
            raise ValueError("a Qdrant URL or a local-mode folder is required")
        self._url = url
        self._api_key = api_key
        self._path = path
        self._client: QdrantClient | None = None
        self._collections: set[str] = set()
        self._open_lock = threading.Lock()
        # Local mode is not thread-safe; the server client is, but one queue keeps it simple.
        self._call_lock = threading.Lock() if url is None else None

    @property
    def is_local(self) -> bool:
        return self._url is None

    def _open(self) -> QdrantClient:
        with self._open_lock:
            if self._client is None:
                if self._url is not None:
                    self._client = _client_class()(url=self._url, api_key=self._api_key)
                else:
                    assert self._path is not None
                    self._path.mkdir(parents=True, exist_ok=True)
                    self._client = _client_class()(path=str(self._path))
            return self._client

    async def _call(self, work: Callable[[QdrantClient], T]) -> T:
        def run() -> T:
            client = self._open()
            if self._call_lock is None:
                return work(client)
            with self._call_lock:
                return work(client)

        return await asyncio.to_thread(run)

    def close(self) -> None:
        with self._open_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._collections.clear()

    def _ensure_collection(self, client: QdrantClient, dimensions: int) -> str:
        name = collection_name(dimensions)
        if name in self._collections:
            return name
        if not client.collection_exists(name):
            client.create_collection(
                name,
                vectors_config={
                    DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            with warnings.catch_warnings():
                # Local mode has no payload indexes and says so; the server builds them.
                warnings.simplefilter("ignore", UserWarning)
                client.create_payload_index(
                    name,
                    "tenant_id",
                    field_schema=models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=True
                    ),
                )
                for field in ("knowledge_base_id", "document_id"):
                    client.create_payload_index(
                        name, field, field_schema=models.PayloadSchemaType.KEYWORD
                    )
        if self.is_local:
            _write_ahead_log(client, name)
        self._collections.add(name)
        return name

    def _existing_collections(self, client: QdrantClient) -> list[str]:
        return [
            c.name
            for c in client.get_collections().collections
            if c.name.startswith(COLLECTION_PREFIX)
        ]

    async def upsert(
        self,
        scope: TenantScope,
        chunks: Sequence[ChunkPoint],
        dense: npt.NDArray[numpy.float32],
        sparse: Sequence[SparseVector],
    ) -> None:
        if not chunks:
            return
        tenant = str(scope.tenant_id)
        points = [
            models.PointStruct(
                id=point_id(chunk.document_id, chunk.chunk_index),
                vector={
                    DENSE: vector.tolist(),
                    SPARSE: models.SparseVector(indices=keywords.indices, values=keywords.values),
                },
                payload=dict(
                    ChunkPayload(
                        tenant_id=tenant,
                        knowledge_base_id=str(chunk.knowledge_base_id),
                        document_id=str(chunk.document_id),
                        filename=chunk.filename,
                        content_type=chunk.content_type,
                        chunk_index=chunk.chunk_index,
                        text=chunk.text,
                        page=chunk.page,
                        section=chunk.section,
                        char_start=chunk.char_start,
                        char_end=chunk.char_end,
                    )
                ),
            )
            for chunk, vector, keywords in zip(chunks, dense, sparse, strict=True)
        ]

        def work(client: QdrantClient) -> None:
            name = self._ensure_collection(client, int(dense.shape[1]))
            client.upsert(name, points=points, wait=True)

        await self._call(work)

    async def _delete(self, scope: TenantScope, *conditions: models.Condition) -> None:
        selector = models.FilterSelector(filter=_scoped(scope, *conditions))

        def work(client: QdrantClient) -> None:
            for name in self._existing_collections(client):
                client.delete(name, points_selector=selector, wait=True)

        await self._call(work)

    async def delete_document(self, scope: TenantScope, document_id: uuid.UUID) -> None:
        await self._delete(scope, _match("document_id", str(document_id)))

    async def delete_knowledge_base(self, scope: TenantScope, knowledge_base_id: uuid.UUID) -> None:
        await self._delete(scope, _match("knowledge_base_id", str(knowledge_base_id)))

    async def count(
        self,
        scope: TenantScope,
        *,
        knowledge_base_id: uuid.UUID | None = None,
        document_id: uuid.UUID | None = None,
    ) -> int:
        conditions: list[models.Condition] = []
        if knowledge_base_id is not None:
            conditions.append(_match("knowledge_base_id", str(knowledge_base_id)))
        if document_id is not None:
            conditions.append(_match("document_id", str(document_id)))
        query_filter = _scoped(scope, *conditions)

        def work(client: QdrantClient) -> int:
            return sum(
                client.count(name, count_filter=query_filter, exact=True).count
                for name in self._existing_collections(client)
            )

        return await self._call(work)

    async def search(
        self,
        scope: TenantScope,
        *,
        knowledge_base_ids: Sequence[uuid.UUID],
        dense: npt.NDArray[numpy.float32],
        sparse: SparseVector | None,
        limit: int,
        mode: SearchMode = "hybrid",
        document_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[VectorHit]:
        """The best chunks of these knowledge bases (of the scope's tenant only)."""
        conditions: list[models.Condition] = [
            _match_any("knowledge_base_id", [str(kb) for kb in knowledge_base_ids])
        ]
        if document_ids:
            conditions.append(_match_any("document_id", [str(d) for d in document_ids]))
        query_filter = _scoped(scope, *conditions)
        name = collection_name(int(dense.shape[0]))
        dense_query = dense.tolist()

        def work(client: QdrantClient) -> list[models.ScoredPoint]:
            if not client.collection_exists(name):
                return []
            if mode == "dense" or sparse is None or not sparse.indices:
                return client.query_points(
                    name,
                    query=dense_query,
                    using=DENSE,
                    query_filter=query_filter,
                    limit=limit,
                    with_payload=True,
                ).points
            depth = max(_PREFETCH_MIN, limit * _PREFETCH_FACTOR)
            return client.query_points(
                name,
                prefetch=[
                    models.Prefetch(
                        query=dense_query, using=DENSE, filter=query_filter, limit=depth
                    ),
                    models.Prefetch(
                        query=models.SparseVector(indices=sparse.indices, values=sparse.values),
                        using=SPARSE,
                        filter=query_filter,
                        limit=depth,
                    ),
                ],
                # Both arms are filtered (to the tenant first); filtering the fused few again
                # would cost local mode another pass over every point's payload.
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                limit=limit,
                with_payload=True,
            ).points

        points = await self._call(work)
        return [
            VectorHit(id=str(p.id), score=float(p.score), payload=_payload(p.payload))
            for p in points
        ]


def _payload(raw: dict[str, object] | None) -> ChunkPayload:
    assert raw is not None
    return cast(ChunkPayload, raw)  # written by `upsert` above, in exactly this shape


def _write_ahead_log(client: QdrantClient, name: str) -> None:
    """Put a local collection's SQLite file in write-ahead-log mode (kept in the file).

    Local mode commits every point in its own transaction. With SQLite's default rollback
    journal each commit costs several fsyncs; in WAL mode, one, after an append, with the
    same durability. qdrant-client has no option for it, so this reaches its storage
    connection; if a release moves that, the collection still works, only slower (logged).
    """
    collection = getattr(getattr(client, "_client", None), "collections", {}).get(name)
    persistence = getattr(collection, "storage", None)
    connection = getattr(persistence, "storage", None)
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA journal_mode=WAL")
    elif collection is None or persistence is not None:  # (no persistence: in memory)
        log.warning("cannot reach the SQLite file of local collection %s", name)


def _client_class() -> type[QdrantClient]:
    from qdrant_client import QdrantClient

    return QdrantClient
