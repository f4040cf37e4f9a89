"""Search for Qdrant's local mode in numpy: Qdrant's ranking without its per-point filter.

Local mode (the embedded column) evaluates a search's payload filter in Python for every
point of the collection, and scores sparse vectors point by point: seconds at 10k chunks,
a minute at 100k. This index mirrors one local collection in numpy arrays, one `_Rows`
per (tenant, knowledge base), so the tenant is part of the key: a search reads only its
own tenant's rows, with no filter to evaluate, and scores them with one matrix product
(dense) and a few slices of sorted postings (sparse).

The collection stays the store: the index is loaded from it once (`load`), every write
`VectorStore` makes goes to the collection first and then here, and the hits' payloads are
read back from the collection by id. Local mode locks its folder to one process, so no
other writer can bring the two out of step. Scores and order follow Qdrant's local mode:
cosine in float64 over the stored unit vectors, BM25 with the IDF modifier computed over
the whole collection (as Qdrant does), and Reciprocal Rank Fusion with Qdrant's k = 2,
dense arm first on equal scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy
import numpy.typing as npt

from apiary.knowledge.sparse import SparseVector

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

Float32Array = npt.NDArray[numpy.float32]
Float64Array = npt.NDArray[numpy.float64]
IntArray = npt.NDArray[numpy.int64]
_Postings = tuple[IntArray, IntArray, Float64Array]  # term, row, weight per entry

RRF_K = 2  # Qdrant's default for FusionQuery(fusion=RRF)
_EPSILON = 1.1920929e-07  # Qdrant local mode's guard against dividing by a zero norm
_LOAD_PAGE = 2048
_FRESH_ROWS = 4096
# float32 scores pick the dense candidates; those within this of the cut are re-scored in
# float64, as Qdrant scores them, so that near-ties order the same way.
_COARSE_MARGIN = 1e-4


@dataclass(frozen=True, slots=True)
class IndexedPoint:
    """What the index keeps of a point besides its vectors."""

    id: str
    tenant_id: str
    knowledge_base_id: str
    document_id: str


def unit(vector: Float32Array) -> Float32Array:
    """A dense vector as local mode stores it in a cosine collection."""
    as_float32 = numpy.asarray(vector, dtype=numpy.float32)
    norm = numpy.linalg.norm(as_float32)
    return as_float32 / norm if norm > _EPSILON else as_float32


class _Rows:
    """One (tenant, knowledge base)'s points as arrays; a replaced or deleted point's row is
    marked dead and dropped when dead rows outnumber live ones. A point's slot is its place
    in the collection, which breaks ties between equal scores as local mode does."""

    def __init__(self, dimensions: int) -> None:
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.documents: list[str] = []
        # Each row's sparse vector as arrays, concatenated into postings when searched.
        self.terms: list[IntArray] = []
        self.weights: list[Float64Array] = []
        self._dense = numpy.zeros((16, dimensions), dtype=numpy.float32)
        self._live = numpy.zeros(16, dtype=bool)
        self._slots = numpy.zeros(16, dtype=numpy.int64)
        self._sorted: _Postings = _no_postings()
        self._sorted_rows = 0  # rows [0, _sorted_rows) are in `_sorted`
        self._fresh: _Postings = _no_postings()
        self._fresh_until = 0  # `_fresh` holds rows [_sorted_rows, _fresh_until)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dense(self) -> Float32Array:
        return self._dense[: len(self.ids)]

    @property
    def live(self) -> npt.NDArray[numpy.bool_]:
        return self._live[: len(self.ids)]

    @property
    def slots(self) -> IntArray:
        return self._slots[: len(self.ids)]

    def append(
        self,
        point_id: str,
        document_id: str,
        dense: Float32Array,
        sparse: SparseVector,
        slot: int,
    ) -> None:
        row = len(self.ids)
        if row == len(self._dense):
            self._dense = numpy.resize(self._dense, (2 * row, self._dense.shape[1]))
            self._live = numpy.resize(self._live, 2 * row)
            self._slots = numpy.resize(self._slots, 2 * row)
        self._dense[row] = dense
        self._live[row] = True
        self._slots[row] = slot
        self.ids.append(point_id)
        self.row_of[point_id] = row
        self.documents.append(document_id)
        self.terms.append(numpy.asarray(sparse.indices, dtype=numpy.int64))
        self.weights.append(numpy.asarray(sparse.values, dtype=numpy.float64))

    def kill(self, point_id: str) -> list[int]:
        """Mark the point's row dead; returns its terms."""
        row = self.row_of.pop(point_id)
        self._live[row] = False
        return [int(term) for term in self.terms[row]]

    def compact_if_mostly_dead(self) -> None:
        if len(self.row_of) * 2 >= len(self.ids):
            return
        survivors = [
            (
                self.ids[row],
                self.documents[row],
                SparseVector(self.terms[row].tolist(), self.weights[row].tolist()),
                int(self._slots[row]),
            )
            for row in numpy.flatnonzero(self.live)
        ]
        dense = self.dense[self.live]
        self.ids, self.row_of, self.documents, self.terms, self.weights = [], {}, [], [], []
        self._sorted, self._sorted_rows = _no_postings(), 0
        self._fresh, self._fresh_until = _no_postings(), 0
        self._dense = numpy.zeros(
            (max(16, 2 * len(survivors)), dense.shape[1]), dtype=numpy.float32
        )
        self._live = numpy.zeros(len(self._dense), dtype=bool)
        self._slots = numpy.zeros(len(self._dense), dtype=numpy.int64)
        for (point_id, document_id, sparse, slot), vector in zip(survivors, dense, strict=True):
            self.append(point_id, document_id, vector, sparse, slot)

    def postings(self) -> tuple[_Postings, _Postings]:
        """The rows' sparse entries for looking terms up: sorted by term up to a point
        (binary search), then the rows written since, in row order (scanned). Sorting
        everything again after each write would cost seconds at 100k rows, so the fresh
        rows join the sorted ones once they are an eighth as many (or 4,096)."""
        rows = len(self.ids)
        if rows - self._sorted_rows > max(_FRESH_ROWS, self._sorted_rows // 8):
            merged = [
                numpy.concatenate([old, new])
                for old, new in zip(
                    self._sorted, self._entries(self._sorted_rows, rows), strict=True
                )
            ]
            # Two runs, one already sorted: a stable sort merges them in about linear time,
            # and keeps each term's rows in row order.
            order = numpy.argsort(merged[0], kind="stable")
            self._sorted = (merged[0][order], merged[1][order], merged[2][order])
            self._sorted_rows = rows
            self._fresh_until = -1  # stale: its rows are in `_sorted` now
        if self._fresh_until != rows:
            self._fresh, self._fresh_until = self._entries(self._sorted_rows, rows), rows
        return self._sorted, self._fresh

    def _entries(self, start: int, stop: int) -> _Postings:
        """(term, row, weight) of rows `start` to `stop`, in row order."""
        lengths = [len(terms) for terms in self.terms[start:stop]]
        return (
            numpy.concatenate([numpy.zeros(0, dtype=numpy.int64), *self.terms[start:stop]]),
            numpy.repeat(numpy.arange(start, stop), lengths),
            numpy.concatenate([numpy.zeros(0, dtype=numpy.float64), *self.weights[start:stop]]),
        )


def _no_postings() -> _Postings:
    return (
        numpy.zeros(0, dtype=numpy.int64),
        numpy.zeros(0, dtype=numpy.int64),
        numpy.zeros(0, dtype=numpy.float64),
    )


class _Hit(NamedTuple):
    id: str
    score: float
    slot: int


@dataclass(frozen=True, slots=True)
class _Candidates:
    """The rows a search may return, across the knowledge bases it covers."""

    shards: list[_Rows]
    allowed: list[npt.NDArray[numpy.bool_]]


class LocalIndex:
    """One local collection's points, by (tenant, knowledge base), for search."""

    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._shards: dict[tuple[str, str], _Rows] = {}
        self._shard_of: dict[str, tuple[str, str]] = {}
        # A point's first place in the collection, kept when it is replaced or deleted
        # (local mode keeps its slot too); equal scores rank the higher slot first.
        self._slot_of: dict[str, int] = {}
        # Collection-wide, as Qdrant's IDF modifier counts: points, and points per term.
        self._document_frequency: Counter[int] = Counter()

    @classmethod
    def load(
        cls, client: QdrantClient, collection: str, dimensions: int, *, dense: str, sparse: str
    ) -> LocalIndex:
        """Every point of the collection, read once through the client's public API (its
        named vectors `dense` and `sparse`)."""
        index = cls(dimensions)
        offset = None
        while True:
            records, offset = client.scroll(
                collection,
                limit=_LOAD_PAGE,
                offset=offset,
                with_payload=["tenant_id", "knowledge_base_id", "document_id"],
                with_vectors=True,
            )
            for record in records:
                payload = record.payload or {}
                vectors = record.vector
                assert isinstance(vectors, dict)
                keywords = vectors[sparse]
                index._add(
                    IndexedPoint(
                        id=str(record.id),
                        tenant_id=str(payload["tenant_id"]),
                        knowledge_base_id=str(payload["knowledge_base_id"]),
                        document_id=str(payload["document_id"]),
                    ),
                    # Stored normalized; `unit` changes at most its last bits, as local
                    # mode's own search does when it normalizes the stored vectors again.
                    unit(numpy.asarray(vectors[dense], dtype=numpy.float32)),
                    SparseVector(
                        indices=list(keywords.indices),  # type: ignore[union-attr]
                        values=list(keywords.values),  # type: ignore[union-attr]
                    ),
                )
            if offset is None:
                return index

    @property
    def size(self) -> int:
        return len(self._shard_of)

    def upsert(
        self,
        points: Sequence[IndexedPoint],
        dense: Float32Array,
        sparse: Sequence[SparseVector],
    ) -> None:
        for point, vector, keywords in zip(points, dense, sparse, strict=True):
            self._remove(point.id)
            self._add(point, unit(vector), keywords)

    def points_of_document(self, tenant_id: str, document_id: str) -> list[str]:
        return [
            point_id
            for (tenant, _), rows in self._shards.items()
            if tenant == tenant_id
            for point_id, row in rows.row_of.items()
            if rows.documents[row] == document_id
        ]

    def points_of_knowledge_base(self, tenant_id: str, knowledge_base_id: str) -> list[str]:
        rows = self._shards.get((tenant_id, knowledge_base_id))
        return [] if rows is None else list(rows.row_of)

    def points_of_tenant(self, tenant_id: str) -> list[str]:
        return [
            point
            for (tenant, _), rows in self._shards.items()
            if tenant == tenant_id
            for point in rows.row_of
        ]

    def delete(self, point_ids: Iterable[str]) -> None:
        for point_id in point_ids:
            self._remove(point_id)

    def _add(self, point: IndexedPoint, dense: Float32Array, sparse: SparseVector) -> None:
        key = (point.tenant_id, point.knowledge_base_id)
        rows = self._shards.get(key)
        if rows is None:
            rows = self._shards[key] = _Rows(self._dimensions)
        slot = self._slot_of.setdefault(point.id, len(self._slot_of))
        rows.append(point.id, point.document_id, dense, sparse, slot)
        self._shard_of[point.id] = key
        self._document_frequency.update(sparse.indices)

    def _remove(self, point_id: str) -> None:
        key = self._shard_of.pop(point_id, None)
        if key is None:
            return
        rows = self._shards[key]
        self._document_frequency.subtract(rows.kill(point_id))
        if not rows.row_of:
            del self._shards[key]
        else:
            rows.compact_if_mostly_dead()

    def search(
        self,
        tenant_id: str,
        *,
        knowledge_base_ids: Iterable[str],
        document_ids: Sequence[str] | None,
        dense: Float32Array | None,
        sparse: SparseVector | None,
        limit: int,
        depth: int,
    ) -> list[tuple[str, float]]:
        """(point id, score) best first: by cosine with `dense` alone, by BM25 with `sparse`
        alone, or with both, the RRF fusion of each arm's best `depth`."""
        candidates = self._candidates(tenant_id, knowledge_base_ids, document_ids)
        if dense is not None and sparse is not None:
            dense_arm = self._dense_ranking(candidates, dense, depth)
            sparse_arm = self._sparse_ranking(candidates, sparse, depth)
            return reciprocal_rank_fusion(
                [[hit.id for hit in dense_arm], [hit.id for hit in sparse_arm]], limit
            )
        if dense is not None:
            hits = self._dense_ranking(candidates, dense, limit)
        elif sparse is not None:
            hits = self._sparse_ranking(candidates, sparse, limit)
        else:
            raise ValueError("a dense or a sparse query is required")
        return [(hit.id, hit.score) for hit in hits]

    def _candidates(
        self, tenant_id: str, knowledge_base_ids: Iterable[str], document_ids: Sequence[str] | None
    ) -> _Candidates:
        shards = [
            rows
            for kb in dict.fromkeys(knowledge_base_ids)
            if (rows := self._shards.get((tenant_id, kb)))
        ]
        allowed = []
        for rows in shards:
            mask = rows.live.copy()
            if document_ids:
                mask &= numpy.isin(numpy.asarray(rows.documents), list(document_ids))
            allowed.append(mask)
        return _Candidates(shards, allowed)

    def _dense_ranking(
        self, candidates: _Candidates, query: Float32Array, limit: int
    ) -> list[_Hit]:
        query64 = numpy.asarray(query, dtype=numpy.float64)
        norm = numpy.linalg.norm(query64)
        query64 = query64 / (norm if norm != 0.0 else _EPSILON)
        query32 = query64.astype(numpy.float32)
        scored: list[_Hit] = []
        for rows, allowed in zip(candidates.shards, candidates.allowed, strict=True):
            allowed_rows = numpy.flatnonzero(allowed)
            if len(allowed_rows) == 0:
                continue
            coarse = rows.dense @ query32
            keep = min(limit, len(allowed_rows))
            cut = numpy.partition(coarse[allowed_rows], -keep)[-keep]
            near = allowed_rows[coarse[allowed_rows] >= cut - _COARSE_MARGIN]
            exact = numpy.zeros(len(rows), dtype=numpy.float64)
            exact[near] = rows.dense[near].astype(numpy.float64) @ query64
            scored += _best(rows, near, exact, limit)
        scored.sort(key=lambda hit: (-hit.score, -hit.slot))
        return scored[:limit]

    def _sparse_ranking(
        self, candidates: _Candidates, query: SparseVector, limit: int
    ) -> list[_Hit]:
        points = self.size
        weighted = sorted(
            (term, value * _idf(self._document_frequency.get(term, 0), points))
            for term, value in zip(query.indices, query.values, strict=True)
        )
        scored: list[_Hit] = []
        for rows, allowed in zip(candidates.shards, candidates.allowed, strict=True):
            (terms, term_rows, term_weights), (fresh, fresh_rows, fresh_weights) = rows.postings()
            hit_rows, contributions = [], []
            for term, weight in weighted:
                start, stop = numpy.searchsorted(terms, [term, term + 1])
                hit = numpy.flatnonzero(fresh == term)
                hit_rows += [term_rows[start:stop], fresh_rows[hit]]
                contributions += [term_weights[start:stop] * weight, fresh_weights[hit] * weight]
            touched = numpy.concatenate(hit_rows)
            # Summed per row in the query's term order, in float64, then float32: as Qdrant.
            sums = numpy.bincount(
                touched, weights=numpy.concatenate(contributions), minlength=len(rows)
            ).astype(numpy.float32)
            matched = numpy.zeros(len(rows), dtype=bool)
            matched[touched] = True  # a row sharing no term with the query is not a hit
            scored += _best(rows, numpy.flatnonzero(matched & allowed), sums, limit)
        scored.sort(key=lambda hit: (-hit.score, -hit.slot))
        return scored[:limit]

    def count(self, tenant_id: str, knowledge_base_id: str) -> int:
        rows = self._shards.get((tenant_id, knowledge_base_id))
        return 0 if rows is None else len(rows.row_of)


def _best(
    rows: _Rows, candidates: IntArray, scores: npt.NDArray[numpy.floating], limit: int
) -> list[_Hit]:
    """The `limit` best of `candidates` (row numbers) by `scores`, higher slot on ties."""
    order = candidates[numpy.lexsort((-rows.slots[candidates], -scores[candidates]))][:limit]
    return [_Hit(rows.ids[row], float(scores[row]), int(rows.slots[row])) for row in order]


def _idf(document_frequency: int, points: int) -> float:
    """BM25's inverse document frequency, exactly as Qdrant's IDF modifier computes it."""
    return math.log((points - document_frequency + 0.5) / (document_frequency + 0.5) + 1)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], limit: int
) -> list[tuple[str, float]]:
    """Qdrant's RRF over rankings of point ids: 1 / (rank + k) per ranking a point is in
    (rank from 1), summed; equal sums keep the order in which the rankings first named
    the points."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for position, point_id in enumerate(ranking):
            fused[point_id] = fused.get(point_id, 0.0) + 1 / (position + RRF_K)
    return sorted(fused.items(), key=lambda item: -item[1])[:limit]
