"""The numpy mirror of a local collection (local_index.py) on its own: writes, deletes and
the two parts of its keyword postings must never change what a search finds.

Its agreement with Qdrant's own ranking is tested on the real corpus in test_retrieval.py;
here the data are random, so that thousands of rows and many writes stay fast.
"""

from __future__ import annotations

import numpy
import numpy.typing as npt
import pytest

from apiary.knowledge import local_index
from apiary.knowledge.local_index import IndexedPoint, LocalIndex
from apiary.knowledge.sparse import SparseVector

DIMENSIONS = 16
RNG = numpy.random.default_rng(5)
VOCABULARY = RNG.integers(0, 2**31 - 1, 400)
QUERIES = [
    (RNG.normal(size=DIMENSIONS).astype(numpy.float32), sorted({int(t) for t in terms}))
    for terms in RNG.choice(VOCABULARY, (6, 3))
]


def _batch(
    first: int, count: int, *, tenant: str = "t1", kb: str = "kb1"
) -> tuple[list[IndexedPoint], npt.NDArray[numpy.float32], list[SparseVector]]:
    points = [
        IndexedPoint(
            id=f"{tenant}-{kb}-{n}",
            tenant_id=tenant,
            knowledge_base_id=kb,
            document_id=f"d{n // 40}",
        )
        for n in range(first, first + count)
    ]
    dense = RNG.normal(size=(count, DIMENSIONS)).astype(numpy.float32)
    sparse = []
    for _ in range(count):
        terms = sorted({int(t) for t in RNG.choice(VOCABULARY, 12)})
        sparse.append(SparseVector(indices=terms, values=RNG.random(len(terms)).tolist()))
    return points, dense, sparse


def _search(
    index: LocalIndex, *, tenant: str = "t1", documents: list[str] | None = None
) -> list[list[tuple[str, float]]]:
    found = []
    for dense, terms in QUERIES:
        keywords = SparseVector(indices=terms, values=[1.0] * len(terms))
        for query_dense, query_sparse in ((dense, keywords), (dense, None), (None, keywords)):
            found.append(
                index.search(
                    tenant,
                    knowledge_base_ids=["kb1", "kb2"],
                    document_ids=documents,
                    dense=query_dense,
                    sparse=query_sparse,
                    limit=10,
                    depth=20,
                )
            )
    return found


def _same(found: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> None:
    """The same points in the same order; scores up to float64 rounding (BLAS sums the
    dense products in an order that depends on how many rows it is given)."""
    assert [[point for point, _ in hits] for hits in found] == [
        [point for point, _ in hits] for hits in expected
    ]
    for hits, wanted in zip(found, expected, strict=True):
        assert [score for _, score in hits] == pytest.approx([s for _, s in wanted], rel=1e-12)


def test_sorted_and_fresh_postings_find_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    index = LocalIndex(DIMENSIONS)
    for start in range(0, 3000, 150):
        index.upsert(*_batch(start, 150))
        monkeypatch.setattr(local_index, "_FRESH_ROWS", 10**9)  # everything scanned
        scanned = _search(index)
        monkeypatch.setattr(local_index, "_FRESH_ROWS", 64)  # merged into sorted postings often
        merged = _search(index)
        _same(merged, scanned)
        assert all(hits for hits in merged)


def test_writes_and_deletes_leave_what_a_fresh_index_would_hold() -> None:
    """Replacing points, deleting documents and knowledge bases keep the collection-wide
    IDF and the rows as if the survivors had been written once into a new index."""
    index = LocalIndex(DIMENSIONS)
    batches = [
        _batch(0, 400),
        _batch(400, 400),
        _batch(0, 400, kb="kb2"),
        _batch(0, 300, tenant="t2"),
    ]
    for batch in batches:
        index.upsert(*batch)
    replaced = _batch(0, 120)  # the first 120 points of t1/kb1 again, with new vectors
    index.upsert(*replaced)
    index.delete(index.points_of_document("t1", "d3"))
    index.delete(index.points_of_knowledge_base("t1", "kb2"))
    assert index.points_of_document("t2", "d3")  # another tenant's document d3 stays

    rebuilt = LocalIndex(DIMENSIONS)
    survivors = {point.id for point in batches[0][0] + batches[1][0] if point.document_id != "d3"}
    survivors |= {point.id for point in batches[3][0]}
    for points, dense, sparse in [replaced, *batches[:2], batches[3]]:
        keep = [n for n, point in enumerate(points) if point.id in survivors]
        survivors -= {points[n].id for n in keep}
        rebuilt.upsert([points[n] for n in keep], dense[keep], [sparse[n] for n in keep])
    assert not survivors
    assert index.size == rebuilt.size
    _same(_search(index), _search(rebuilt))
    _same(_search(index, tenant="t2"), _search(rebuilt, tenant="t2"))
    _same(_search(index, documents=["d1"]), _search(rebuilt, documents=["d1"]))
    assert {hit for hits in _search(index, documents=["d1"]) for hit, _ in hits} <= {
        point.id for point in batches[1][0] + batches[0][0] if point.document_id == "d1"
    }


def test_a_tenant_finds_only_its_own_points() -> None:
    index = LocalIndex(DIMENSIONS)
    index.upsert(*_batch(0, 200))
    index.upsert(*_batch(0, 200, tenant="t2"))
    for hits in _search(index, tenant="t2"):
        assert hits
        assert all(point_id.startswith("t2-") for point_id, _ in hits)
    assert all(hits == [] for hits in _search(index, tenant="t3"))
