"""Knowledge benchmark: ingestion throughput and search latency in Qdrant local mode.

Everything runs through Apiary's own code path (`apiary.knowledge`): extraction and
splitting, the bundled MiniLM embedder, the BM25-style sparse vectors, and `VectorStore`
with its tenant filter, against Qdrant in local mode (a folder, as `apiary serve` uses
without APIARY_QDRANT_URL). Searches are timed twice: through the numpy mirror
`VectorStore` uses in local mode (local_index.py, the default) and through local mode's
own query engine (`numpy_search=False`, what it used before). The baseline beside them is
brute-force cosine search in numpy over the same vectors, so the ratios say what each
costs on top of the arithmetic.

1. Ingestion: `--ingest-chunks` chunks of text (sentences of the test corpus shuffled into
   800-character chunks) are embedded with MiniLM, given sparse vectors and upserted in
   batches of 64, as the ingestion job does; the stages are timed separately.
2. Indexes of 10k and 100k chunks: MiniLM on this machine embeds a few chunks per second,
   so the large indexes reuse the ingested chunks' vectors (each copy perturbed with small
   Gaussian noise and renormalised), sparse vectors (each copy's weights perturbed) and
   texts; each index is built once into bench/.knowledge-cache/ and reused by later runs
   (`--rebuild` to redo). Local mode's folder writes every point in its own SQLite
   transaction (one fsync each since VectorStore puts the file in WAL mode) and grows its
   arrays with `numpy.append` per point, so building 100k points on disk is slow here;
   indexes above `--on-disk-max` (20k, the size past which qdrant-client itself warns) are
   built in local mode's in-memory variant instead, which runs the very same search code.
3. Search: the test corpus's questions, embedded by MiniLM (timed on its own), searched
   `dense` and `hybrid` through `VectorStore.search`, by either engine; p50/p95 per engine,
   mode and size, against numpy's brute force over the same matrix. The numpy mirror is
   read from the collection on the first search after opening (timed on its own), and
   its top 5 is compared with local mode's (tests/knowledge/test_retrieval.py checks
   the full ranking on the real corpus).

0. Embedders side by side (first, unless `--embedders ""`): the numpy reference
   (`NumpyMiniLMEmbedder`, the product's embedder before ONNX Runtime) and the ONNX
   Runtime embedder in float32 and int8 (the product's default) embed the same
   `--embed-chunks` chunks in batches of 64 and the questions one at a time, taking turns
   batch by batch and query by query, so the load of a shared machine falls on all of them
   alike; chunks/s, query p50/p95 and each one's ratio to numpy, and the lowest cosine of
   its vectors to numpy's.

    .venv/bin/python bench/knowledge.py                       # 10k and 100k (long: see docs)
    .venv/bin/python bench/knowledge.py --sizes 10000 --ingest-chunks 256 --queries 10
    .venv/bin/python bench/knowledge.py --sizes "" --ingest-chunks 64 --embed-chunks 1000 \
        --queries 55                                          # the embedders alone

The JSON of each run goes to bench/results/knowledge-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import numpy.typing as npt
from qdrant_client import QdrantClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apiary.authz.scope import TenantScope  # noqa: E402
from apiary.embeddings.minilm import MiniLMEmbedder  # noqa: E402
from apiary.embeddings.minilm_numpy import NumpyMiniLMEmbedder  # noqa: E402
from apiary.knowledge.chunking import split  # noqa: E402
from apiary.knowledge.extract import extract  # noqa: E402
from apiary.knowledge.sparse import SparseVector, document_vector, query_vector  # noqa: E402
from apiary.knowledge.vectors import ChunkPoint, VectorStore, point_id  # noqa: E402

CORPUS = ROOT / "tests" / "knowledge" / "corpus"
QUESTIONS = ROOT / "tests" / "knowledge" / "questions.json"
CACHE = ROOT / "bench" / ".knowledge-cache"
RESULTS = ROOT / "bench" / "results"
TENANT = TenantScope(uuid.UUID("00000000-0000-4000-8000-00000000b001"))
KB = uuid.UUID("00000000-0000-4000-8000-00000000cb01")
BATCH = 64
INDEX_BATCH = 512
TOP_K = 5

Float32Array = npt.NDArray[numpy.float32]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def chunk_texts(count: int, seed: int = 7) -> list[str]:
    """`count` chunks of about 800 characters made of the corpus's sentences, shuffled."""
    sentences: list[str] = []
    for path in sorted(CORPUS.iterdir()):
        text = extract(path.read_bytes(), path.name).text
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s) > 20]
    rng = random.Random(seed)
    chunks: list[str] = []
    while len(chunks) < count:
        rng.shuffle(sentences)
        document = " ".join(sentences)
        extracted = extract(document.encode(), "synthetic.txt")
        chunks += [c.text for c in split(extracted, chunk_size=800, chunk_overlap=120)]
    return chunks[:count]


def document_of(row: int) -> uuid.UUID:
    """Rows are grouped into documents of 1,000 chunks each."""
    return uuid.uuid5(KB, f"bench-document-{row // 1000}")


def points_for(texts: Sequence[str], start: int) -> list[ChunkPoint]:
    return [
        ChunkPoint(
            knowledge_base_id=KB,
            document_id=document_of(start + offset),
            filename="synthetic.txt",
            content_type="text/plain",
            chunk_index=start + offset,
            text=text,
            page=None,
            section=None,
            char_start=0,
            char_end=len(text),
        )
        for offset, text in enumerate(texts)
    ]


async def bench_ingestion(
    count: int, workdir: Path
) -> tuple[dict[str, Any], list[str], Float32Array]:
    texts = chunk_texts(count)
    embedder = MiniLMEmbedder()
    embedder.embed(texts[:4])  # load the model outside the timings
    store = VectorStore(url=None, path=workdir / "ingest")
    timings = {"embed": 0.0, "sparse": 0.0, "upsert": 0.0}
    vectors = numpy.zeros((count, embedder.dimensions), dtype=numpy.float32)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        batch = texts[first : first + BATCH]
        t0 = time.perf_counter()
        dense = await embedder.embed_async(batch)
        t1 = time.perf_counter()
        sparse = [document_vector(text) for text in batch]
        t2 = time.perf_counter()
        await store.upsert(TENANT, points_for(batch, first), dense, sparse)
        t3 = time.perf_counter()
        timings["embed"] += t1 - t0
        timings["sparse"] += t2 - t1
        timings["upsert"] += t3 - t2
        vectors[first : first + len(batch)] = dense
    total = time.perf_counter() - started
    stored = await store.count(TENANT, knowledge_base_id=KB)
    store.close()
    assert stored == count, (stored, count)
    result = {
        "chunks": count,
        "seconds": round(total, 2),
        "chunks_per_s": round(count / total, 2),
        "stage_chunks_per_s": {stage: round(count / s, 1) for stage, s in timings.items()},
        "embed_share": round(timings["embed"] / total, 3),
    }
    return result, texts, vectors


def make_embedder(name: str) -> MiniLMEmbedder | NumpyMiniLMEmbedder:
    if name == "numpy":
        return NumpyMiniLMEmbedder()
    if name in ("fp32", "int8"):
        return MiniLMEmbedder(precision=name)
    raise SystemExit(f"unknown embedder {name!r}: numpy, fp32 or int8")


async def bench_embedders(names: list[str], texts: list[str], queries: list[str]) -> dict[str, Any]:
    """Each embedder on the same chunks and queries, taking turns so the machine's load falls
    on all alike; ratios are to the first one (numpy)."""
    embedders = {name: make_embedder(name) for name in names}
    loads = {}
    for name, embedder in embedders.items():
        started = time.perf_counter()
        embedder.embed(texts[:2])  # builds/loads the model outside the timings
        loads[name] = round(time.perf_counter() - started, 2)
    seconds = dict.fromkeys(names, 0.0)
    vectors = {name: numpy.zeros((len(texts), 384), dtype=numpy.float32) for name in names}
    for first in range(0, len(texts), BATCH):
        batch = texts[first : first + BATCH]
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors[name][first : first + len(batch)] = await embedder.embed_async(batch)
            seconds[name] += time.perf_counter() - started
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for query in queries:
        for name, embedder in embedders.items():
            started = time.perf_counter()
            await embedder.embed_async([query])
            latencies[name].append(time.perf_counter() - started)
    base = names[0]
    result: dict[str, Any] = {"chunks": len(texts), "queries": len(queries)}
    for name in names:
        cosines = (vectors[name] * vectors[base]).sum(axis=1)
        result[name] = {
            "first_use_s": loads[name],
            "chunks_per_s": round(len(texts) / seconds[name], 1),
            "chunks_per_s_vs_" + base: round(seconds[base] / seconds[name], 2),
            "query": _summary(latencies[name]),
            "query_p50_vs_" + base: round(
                percentile(latencies[base], 0.5) / percentile(latencies[name], 0.5), 2
            ),
            "min_cosine_to_" + base: round(float(cosines.min()), 4),
        }
    return result


def grow(vectors: Float32Array, size: int, seed: int = 11) -> Float32Array:
    """`size` rows: copies of `vectors` with noise (sigma 0.02 per dimension), unit length."""
    rng = numpy.random.default_rng(seed)
    rows = vectors[numpy.arange(size) % len(vectors)].copy()
    rows[len(vectors) :] += rng.normal(0, 0.02, rows[len(vectors) :].shape).astype(numpy.float32)
    rows /= numpy.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def grow_sparse(texts: Sequence[str], size: int, seed: int = 13) -> list[SparseVector]:
    """`size` sparse vectors: the texts' own, then copies whose weights carry noise (sigma
    2%), as the dense copies do; identical copies would tie in the keyword arm, and equal
    scores are ordered arbitrarily by Qdrant, which would blur the engines' comparison."""
    rng = numpy.random.default_rng(seed)
    originals = [document_vector(text) for text in texts]
    grown = list(originals)
    for row in range(len(texts), size):
        original = originals[row % len(texts)]
        noise = 1 + rng.normal(0, 0.02, len(original.values))
        grown.append(
            SparseVector(
                indices=original.indices,
                values=[float(v) for v in numpy.asarray(original.values) * noise],
            )
        )
    return grown


def in_memory_store() -> VectorStore:
    store = VectorStore(url=None, path=Path("unused"))
    # Bench only: local mode without its folder (same engine, same search code).
    store._client = QdrantClient(location=":memory:")
    return store


async def build_index(
    size: int, texts: Sequence[str], vectors: Float32Array, *, rebuild: bool, on_disk: bool
) -> tuple[VectorStore, Float32Array, dict[str, Any]]:
    folder = CACHE / f"index-{size}-{len(texts)}"
    rows = grow(vectors, size)
    info: dict[str, Any] = {"size": size, "storage": "folder" if on_disk else "memory"}
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    fresh = not on_disk or not folder.exists()
    if fresh:
        store = VectorStore(url=None, path=folder) if on_disk else in_memory_store()
        sparse_of = grow_sparse(texts, size)
        started = time.perf_counter()
        for first in range(0, size, INDEX_BATCH):
            last = min(size, first + INDEX_BATCH)
            batch_texts = [texts[i % len(texts)] for i in range(first, last)]
            sparse = sparse_of[first:last]
            await store.upsert(TENANT, points_for(batch_texts, first), rows[first:last], sparse)
        seconds = time.perf_counter() - started
        info["build_seconds"] = round(seconds, 1)
        info["upsert_chunks_per_s"] = round(size / seconds, 1)
        if not on_disk:
            return store, rows, info
        store.close()
    started = time.perf_counter()
    store = VectorStore(url=None, path=folder)
    stored = await store.count(TENANT, knowledge_base_id=KB)  # opens (loads) the folder
    info["open_seconds"] = round(time.perf_counter() - started, 2)
    assert stored == size, (stored, size)
    return store, rows, info


async def _search(
    store: VectorStore, query: str, dense: Float32Array, mode: str, *, numpy_search: bool
) -> list[str]:
    store.numpy_search = numpy_search
    hits = await store.search(
        TENANT,
        knowledge_base_ids=[KB],
        dense=dense,
        sparse=query_vector(query),
        limit=TOP_K,
        mode=mode,  # type: ignore[arg-type]
    )
    return [hit.id for hit in hits]


async def bench_search(
    store: VectorStore, rows: Float32Array, queries: list[str], query_vectors: Float32Array
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    started = time.perf_counter()
    await _search(store, queries[0], query_vectors[0], "dense", numpy_search=True)
    result["numpy_index_load_seconds"] = round(time.perf_counter() - started, 2)
    top: dict[tuple[str, str], list[list[str]]] = {}
    for engine, numpy_search in (("numpy_index", True), ("qdrant", False)):
        for mode in ("dense", "hybrid"):
            latencies, found = [], []
            for index, (query, dense) in enumerate(zip(queries, query_vectors, strict=True)):
                started = time.perf_counter()
                found.append(await _search(store, query, dense, mode, numpy_search=numpy_search))
                if index > 0 or len(queries) == 1:  # the first query warms caches up
                    latencies.append(time.perf_counter() - started)
            result[f"{engine}_{mode}"] = _summary(latencies)
            top[(engine, mode)] = found
    store.numpy_search = True
    latencies, overlap = [], []
    for dense, found in zip(query_vectors, top[("qdrant", "dense")], strict=True):
        started = time.perf_counter()
        scores = rows @ dense
        best = numpy.argpartition(-scores, TOP_K)[:TOP_K]
        best[numpy.argsort(-scores[best])]
        latencies.append(time.perf_counter() - started)
        expected = {point_id(document_of(int(row)), int(row)) for row in best}
        overlap.append(len(expected & set(found)) / TOP_K)
    result["numpy_bruteforce"] = _summary(latencies)
    result["qdrant_dense_top5_agreement_with_numpy"] = round(statistics.mean(overlap), 3)
    for mode in ("dense", "hybrid"):
        pairs = zip(top[("numpy_index", mode)], top[("qdrant", mode)], strict=True)
        result[f"{mode}_top5_numpy_index_vs_qdrant"] = round(
            statistics.mean(len(set(a) & set(b)) / TOP_K for a, b in pairs), 3
        )
        for engine in ("numpy_index", "qdrant"):
            result[f"{engine}_{mode}_vs_numpy_p50"] = round(
                result[f"{engine}_{mode}"]["p50_ms"]
                / max(result["numpy_bruteforce"]["p50_ms"], 1e-6),
                1,
            )
    return result


def _summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 3),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 3),
        "n": len(seconds),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest-chunks", type=int, default=1000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument(
        "--embedders",
        default="numpy,fp32,int8",
        help="embedders to time side by side first, the first being the baseline ('' skips)",
    )
    parser.add_argument("--embed-chunks", type=int, default=1000)
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached indexes")
    parser.add_argument("--on-disk-max", type=int, default=20_000)
    parser.add_argument(
        "--reuse-ingestion",
        action="store_true",
        help="skip the ingestion timing; reuse the chunks and vectors the last run cached",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    CACHE.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "args": vars(args),
    }
    names = [name for name in args.embedders.split(",") if name]
    if names:
        questions = [q["question"] for q in json.loads(QUESTIONS.read_text())]
        print(f"embedders side by side: {', '.join(names)} ...")
        report["embedders"] = await bench_embedders(
            names, chunk_texts(args.embed_chunks), questions[: args.queries]
        )
        print(json.dumps(report["embedders"], indent=2))
        row = "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}"
        header = ("embedder", "chunks/s", "x base", "query p50", "p95 ms", "x base", "min cos")
        print(row.format(*header))
        for name in names:
            figures = report["embedders"][name]
            print(
                row.format(
                    name,
                    figures["chunks_per_s"],
                    figures[f"chunks_per_s_vs_{names[0]}"],
                    figures["query"]["p50_ms"],
                    figures["query"]["p95_ms"],
                    figures[f"query_p50_vs_{names[0]}"],
                    figures[f"min_cosine_to_{names[0]}"],
                )
            )
    cached_texts = CACHE / f"ingested-{args.ingest_chunks}.json"
    cached_vectors = CACHE / f"ingested-{args.ingest_chunks}.npy"
    if args.reuse_ingestion and cached_texts.exists() and cached_vectors.exists():
        texts = json.loads(cached_texts.read_text())
        vectors = numpy.load(cached_vectors)
        print(f"reusing {len(texts)} ingested chunks from {cached_texts.name}")
    else:
        with tempfile.TemporaryDirectory() as workdir:
            print(f"ingestion: {args.ingest_chunks} chunks (MiniLM + sparse + local Qdrant) ...")
            ingestion, texts, vectors = await bench_ingestion(args.ingest_chunks, Path(workdir))
        report["ingestion"] = ingestion
        print(json.dumps(ingestion, indent=2))
        cached_texts.write_text(json.dumps(texts))
        numpy.save(cached_vectors, vectors)

    questions = [q["question"] for q in json.loads(QUESTIONS.read_text())][: args.queries]
    embedder = MiniLMEmbedder()
    query_latencies = []
    query_vectors = numpy.zeros((len(questions), embedder.dimensions), dtype=numpy.float32)
    for index, question in enumerate(questions):
        started = time.perf_counter()
        query_vectors[index] = (await embedder.embed_async([question]))[0]
        query_latencies.append(time.perf_counter() - started)
    report["query_embedding"] = _summary(query_latencies)
    print("query embedding (MiniLM, one query):", report["query_embedding"])

    report["indexes"] = []
    for size in sizes:
        print(f"index of {size} chunks: building or opening ...")
        store, rows, info = await build_index(
            size, texts, vectors, rebuild=args.rebuild, on_disk=size <= args.on_disk_max
        )
        print(" ", info)
        info["search"] = await bench_search(store, rows, questions, query_vectors)
        store.close()
        print(json.dumps(info["search"], indent=2))
        report["indexes"].append(info)
    report["machine"]["load_average_at_end"] = os.getloadavg()

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"knowledge-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")
    row = "{:>8} {:>12} {:>8} {:>10} {:>10} {:>12}"
    print("\n" + row.format("size", "engine", "mode", "p50 ms", "p95 ms", "x numpy p50"))
    for info in report["indexes"]:
        search = info["search"]
        for engine in ("numpy_index", "qdrant"):
            for mode in ("dense", "hybrid"):
                key = f"{engine}_{mode}"
                figures = search[key]
                ratio = search[key + "_vs_numpy_p50"]
                print(
                    row.format(
                        info["size"], engine, mode, figures["p50_ms"], figures["p95_ms"], ratio
                    )
                )
        brute = search["numpy_bruteforce"]
        print(row.format(info["size"], "brute force", "dense", brute["p50_ms"], brute["p95_ms"], 1))


if __name__ == "__main__":
    asyncio.run(main())
