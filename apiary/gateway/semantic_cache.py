"""The semantic cache: a request whose conversation means the same as an earlier one's
(cosine similarity of MiniLM embeddings at or above a threshold) gets the earlier answer.

It only ever compares requests that are identical in everything but their messages: the
bucket is keyed by the tenant and a hash of all the other answer-changing parameters
(model or route, temperature, tools, response format, ...). So two tenants never share an
entry and a request with a differing parameter never hits. It is consulted after an exact
miss, only for requests that may be cached at all (see `cache.py`), and lives in process:
each bucket keeps its newest `max_per_bucket` entries as one matrix, searched with a single
matrix-vector product.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy
import numpy.typing as npt

from apiary.embeddings.minilm import MiniLMEmbedder
from apiary.gateway.cache import CachedResponse, bucket_key

__all__ = ["SemanticCache", "bucket_key", "conversation_text"]


def conversation_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{message.get('role')}: {content or ''}")
    return "\n".join(parts)


@dataclass
class _Bucket:
    vectors: npt.NDArray[numpy.float32]
    responses: list[tuple[float, CachedResponse]] = field(default_factory=list)


class SemanticCache:
    def __init__(
        self,
        embedder: MiniLMEmbedder,
        *,
        threshold: float = 0.95,
        ttl_s: int = 3600,
        max_per_bucket: int = 1000,
        max_buckets: int = 10_000,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self._ttl = ttl_s
        self._max_per_bucket = max_per_bucket
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    async def embed(self, body: dict[str, Any]) -> npt.NDArray[numpy.float32]:
        vectors = await self.embedder.embed_async([conversation_text(body)])
        vector: npt.NDArray[numpy.float32] = vectors[0]
        return vector

    def get(
        self, bucket: str, vector: npt.NDArray[numpy.float32]
    ) -> tuple[CachedResponse, float] | None:
        """The closest earlier answer in the bucket, and its similarity, if close enough."""
        found = self._buckets.get(bucket)
        if found is None or not found.responses:
            return None
        scores = found.vectors @ vector  # unit vectors: the dot product is the cosine
        best = int(numpy.argmax(scores))
        expires, response = found.responses[best]
        if float(scores[best]) < self.threshold or expires <= time.monotonic():
            return None
        self._buckets.move_to_end(bucket)
        return response, float(scores[best])

    def forget_tenant(self, tenant_id: str) -> int:
        """Drop the buckets of a tenant being deleted (their keys start with its id)."""
        doomed = [bucket for bucket in self._buckets if bucket.startswith(f"{tenant_id}:")]
        for bucket in doomed:
            del self._buckets[bucket]
        return len(doomed)

    def put(
        self, bucket: str, vector: npt.NDArray[numpy.float32], response: CachedResponse
    ) -> None:
        entry = (time.monotonic() + self._ttl, response)
        found = self._buckets.get(bucket)
        if found is None:
            found = _Bucket(vectors=vector.reshape(1, -1).copy(), responses=[entry])
            self._buckets[bucket] = found
        else:
            found.vectors = numpy.vstack([found.vectors, vector])[-self._max_per_bucket :]
            found.responses = [*found.responses, entry][-self._max_per_bucket :]
        self._buckets.move_to_end(bucket)
        while len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
