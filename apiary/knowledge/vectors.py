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
take the lock) and its calls run on a worker thread, one at a time. Local mode tests the
payload filter and scores sparse vectors in Python, point by point, so there searches and
deletes go through a numpy mirror of the collection instead (local_index.py), keyed by
(tenant, knowledge base): the scope's tenant picks the rows, the ranking is Qdrant's,
deletes go to the collection by point id, and hits' payloads are read from it. Writes go
to the collection first, then to the mirror. In production the same calls go to
`APIARY_QDRANT_URL`, and Qdrant filters and searches with its own indexes.
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

    from apiary.knowledge.local_index import LocalIndex
else:  # qdrant-client is imported when knowledge bases are first used, not at start-up
    models = LazyModule("qdrant_client.models")

COLLECTION_PREFIX = "apiary_knowledge_"
DENSE = "dense"
SPARSE = "sparse"
SearchMode = Literal["hybrid", "dense"]
# Each arm of a hybrid search on its own ("keyword": BM25 alone), for the tests and the
# benchmark that compare local mode's query engine with the numpy mirror arm by arm.
ArmMode = Literal["hybrid", "dense", "keyword"]
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
        self,
        *,
        url: str | None,
        api_key: str | None = None,
        path: Path | None = None,
        numpy_search: bool = True,
    ) -> None:
        if url is None and path is None:
            raise ValueError("a Qdrant URL or a local-mode folder is required")
        # Local mode searches its numpy mirror; False sends searches to local mode's own
        # query engine (the tests and the benchmark compare the two).
        self.numpy_search = numpy_search
        self._url = url
        self._api_key = api_key
        self._path = path
        self._client: QdrantClient | None = None
        self._collections: set[str] = set()
        self._local_indexes: dict[str, LocalIndex] = {}  # local mode: by collection
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
                self._local_indexes.clear()

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

    def _local_index(self, client: QdrantClient, name: str) -> LocalIndex:
        """The collection's numpy mirror, read from it on first use (local mode only)."""
        from apiary.knowledge.local_index import LocalIndex  # numpy: on first use

        index = self._local_indexes.get(name)
        if index is None:
            dimensions = int(name.removeprefix(COLLECTION_PREFIX))
            index = self._local_indexes[name] = LocalIndex.load(
                client, name, dimensions, dense=DENSE, sparse=SPARSE
            )
        return index

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
            index = self._local_index(client, name) if self.is_local else None
            client.upsert(name, points=points, wait=True)
            if index is not None:
                from apiary.knowledge.local_index import IndexedPoint

                indexed = [
                    IndexedPoint(
                        id=str(point.id),
                        tenant_id=tenant,
                        knowledge_base_id=str(chunk.knowledge_base_id),
                        document_id=str(chunk.document_id),
                    )
                    for point, chunk in zip(points, chunks, strict=True)
                ]
                index.upsert(indexed, dense, sparse)

        await self._call(work)

    async def _delete(
        self,
        scope: TenantScope,
        condition: models.Condition,
        points_in_local_index: Callable[[LocalIndex], list[str]],
    ) -> None:
        selector = models.FilterSelector(filter=_scoped(scope, condition))

        def work(client: QdrantClient) -> None:
            for name in self._existing_collections(client):
                if not self.is_local:
                    client.delete(name, points_selector=selector, wait=True)
                    continue
                # Local mode would test the filter on every point of the collection; the
                # mirror knows the scope's points, so they are deleted by id.
                index = self._local_index(client, name)
                doomed = points_in_local_index(index)
                if doomed:
                    client.delete(
                        name, points_selector=models.PointIdsList(points=list(doomed)), wait=True
                    )
                    index.delete(doomed)

        await self._call(work)

    async def delete_document(self, scope: TenantScope, document_id: uuid.UUID) -> None:
        tenant, document = str(scope.tenant_id), str(document_id)
        await self._delete(
            scope,
            _match("document_id", document),
            lambda index: index.points_of_document(tenant, document),
        )

    async def delete_knowledge_base(self, scope: TenantScope, knowledge_base_id: uuid.UUID) -> None:
        tenant, knowledge_base = str(scope.tenant_id), str(knowledge_base_id)
        await self._delete(
            scope,
            _match("knowledge_base_id", knowledge_base),
            lambda index: index.points_of_knowledge_base(tenant, knowledge_base),
        )

    async def delete_tenant(self, scope: TenantScope) -> None:
        """Every point of the scope's tenant, in every collection (a tenant being deleted)."""
        tenant = str(scope.tenant_id)
        await self._delete(
            scope,
            _match("tenant_id", tenant),
            lambda index: index.points_of_tenant(tenant),
        )

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
        mode: ArmMode = "hybrid",
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

        keywords = None if mode == "dense" or sparse is None or not sparse.indices else sparse
        if mode == "keyword" and keywords is None:
            return []  # no query term outside the stop words
        depth = max(_PREFETCH_MIN, limit * _PREFETCH_FACTOR)

        def work(client: QdrantClient) -> list[models.ScoredPoint]:
            if not client.collection_exists(name):
                return []
            if self.is_local and self.numpy_search:
                return self._local_search(
                    client,
                    name,
                    scope,
                    knowledge_base_ids=knowledge_base_ids,
                    document_ids=document_ids,
                    dense=None if mode == "keyword" else dense,
                    sparse=keywords,
                    limit=limit,
                    depth=depth,
                )
            if keywords is None or mode == "keyword":
                return client.query_points(
                    name,
                    query=dense_query if keywords is None else _sparse_query(keywords),
                    using=DENSE if keywords is None else SPARSE,
                    query_filter=query_filter,
                    limit=limit,
                    with_payload=True,
                ).points
            return client.query_points(
                name,
                prefetch=[
                    models.Prefetch(
                        query=dense_query, using=DENSE, filter=query_filter, limit=depth
                    ),
                    models.Prefetch(
                        query=_sparse_query(keywords),
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

    def _local_search(
        self,
        client: QdrantClient,
        name: str,
        scope: TenantScope,
        *,
        knowledge_base_ids: Sequence[uuid.UUID],
        document_ids: Sequence[uuid.UUID] | None,
        dense: npt.NDArray[numpy.float32] | None,
        sparse: SparseVector | None,
        limit: int,
        depth: int,
    ) -> list[models.ScoredPoint]:
        """The same search in the numpy mirror; the tenant is the mirror's key (the
        choke point here), and the payloads come from the collection."""
        ranked = self._local_index(client, name).search(
            str(scope.tenant_id),
            knowledge_base_ids=[str(kb) for kb in knowledge_base_ids],
            document_ids=[str(d) for d in document_ids] if document_ids else None,
            dense=dense,
            sparse=sparse,
            limit=limit,
            depth=depth,
        )
        records = {
            str(record.id): record
            for record in client.retrieve(name, ids=[point_id for point_id, _ in ranked])
        }
        return [
            models.ScoredPoint(
                id=point_id, version=0, score=score, payload=records[point_id].payload
            )
            for point_id, score in ranked
        ]


def _sparse_query(keywords: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=keywords.indices, values=keywords.values)


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
