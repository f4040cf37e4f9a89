"""The gateway's caches forget a deleted tenant: the exact cache here and in Redis, the
semantic cache's buckets; another tenant's entries stay."""

from __future__ import annotations

import uuid

import numpy

from apiary.embeddings.minilm import MiniLMEmbedder
from apiary.gateway.cache import CachedResponse, ResponseCache, bucket_key, cache_key
from apiary.gateway.semantic_cache import SemanticCache
from apiary.kit.redis import connect
from tests.conftest import TEST_REDIS

ANSWER = CachedResponse(b'{"choices": []}', "oai", "gpt-4o-mini", 3, 4, 0.01)
BODY = {"model": "default", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


async def test_the_response_cache_forgets_one_tenant() -> None:
    doomed, other = str(uuid.uuid4()), str(uuid.uuid4())
    redis = connect(TEST_REDIS) if TEST_REDIS else None
    cache = ResponseCache(redis=redis)
    try:
        await cache.put(cache_key(doomed, BODY), ANSWER)
        await cache.put(cache_key(other, BODY), ANSWER)
        removed = await cache.forget_tenant(doomed)
        assert removed == (1 if redis else 0)  # the Redis entries; the local ones go too
        assert await cache.get(cache_key(doomed, BODY)) is None
        assert await cache.get(cache_key(other, BODY)) == ANSWER
        if redis is not None:  # what another replica, with an empty local cache, reads
            fresh = ResponseCache(redis=redis)
            assert await fresh.get(cache_key(doomed, BODY)) is None
            assert await fresh.get(cache_key(other, BODY)) == ANSWER
            await redis.delete(f"apiary:cache:{cache_key(other, BODY)}")
    finally:
        await cache.close()
        if redis is not None:
            await redis.aclose()


def test_the_semantic_cache_forgets_one_tenant() -> None:
    doomed, other = str(uuid.uuid4()), str(uuid.uuid4())
    cache = SemanticCache(MiniLMEmbedder(), threshold=0.9)
    vector = numpy.ones(384, dtype=numpy.float32) / numpy.sqrt(384)
    cache.put(bucket_key(doomed, BODY), vector, ANSWER)
    cache.put(bucket_key(other, BODY), vector, ANSWER)
    assert cache.forget_tenant(doomed) == 1
    assert cache.get(bucket_key(doomed, BODY), vector) is None
    found = cache.get(bucket_key(other, BODY), vector)
    assert found is not None
    assert found[0] == ANSWER
