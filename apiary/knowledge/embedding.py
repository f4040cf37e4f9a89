"""Embeddings for a knowledge base: the bundled MiniLM in process, or a gateway model.

A gateway model is called through the gateway client's `embed`, the same flow as `/v1/embeddings`,
so routing, fallback and the ledger (costs per tenant) apply. Vectors come back unit-length
float32 rows either way, in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy
import numpy.typing as npt

from apiary.auth.context import AuthContext
from apiary.errors import BadRequest
from apiary.knowledge.models import BUNDLED_EMBEDDING_MODEL

if TYPE_CHECKING:
    from apiary.knowledge.deps import EmbedDeps

Float32Array = npt.NDArray[numpy.float32]


async def embed_texts(
    deps: EmbedDeps, auth: AuthContext, model: str, texts: Sequence[str]
) -> Float32Array:
    if model == BUNDLED_EMBEDDING_MODEL:
        # ONNX Runtime on worker threads, off the event loop
        return await deps.embedder.embed_async(list(texts))
    reply = await deps.client.embed(auth, {"model": model, "input": list(texts)})
    rows = sorted(reply.json().get("data", []), key=lambda row: int(row.get("index", 0)))
    if len(rows) != len(texts):
        raise BadRequest(f"embedding model {model!r} returned {len(rows)} vectors for {len(texts)}")
    vectors = numpy.asarray([row["embedding"] for row in rows], dtype=numpy.float32)
    vectors /= numpy.maximum(
        numpy.linalg.norm(vectors, axis=1, keepdims=True), numpy.float32(1e-12)
    )
    return vectors
