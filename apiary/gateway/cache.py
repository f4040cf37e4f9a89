"""The response cache: exact match in process, then Redis when configured.

A request is cached only if it asks to be (`"cache": true` in the body, or the header
`X-Apiary-Cache: true`) or is deterministic (temperature 0), and only without streaming.
The key covers the tenant, the `model` the client asked for, and every parameter that can
change the answer: the whole body except the few keys that cannot (`stream`, `user`,
`metadata`, the cache switch itself). Two tenants never share an entry, and requests that
differ in any answer-changing parameter never hit each other's.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Keys that never change what the model answers.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "metadata", "cache", "store"})

DEFAULT_TTL_S = 3600
DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class CachedResponse:
    body: bytes
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # what the original call cost: the saving of each hit

    def dumps(self) -> bytes:
        return orjson.dumps(
            [
                self.body.decode(),
                self.provider,
                self.model,
                self.prompt_tokens,
                self.completion_tokens,
                self.cost_usd,
            ]
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedResponse:
        body, provider, model, prompt, completion, cost = orjson.loads(raw)
        return cls(body.encode(), provider, model, prompt, completion, cost)


def wants_cache(body: dict[str, Any], header: str | None) -> bool:
    if body.get("stream"):
        return False
    asked = body.get("cache")
    if asked is not None:
        return bool(asked)
    if header is not None:
        return header.strip().lower() in ("1", "true", "yes")
    return body.get("temperature") == 0


def cache_key(tenant_id: str, body: dict[str, Any]) -> str:
    """The tenant in clear, then a hash of the rest: deleting a tenant finds its entries
    by that prefix (`forget_tenant`)."""
    relevant = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    canonical = orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)
    return f"{tenant_id}:" + hashlib.sha256(tenant_id.encode() + b"\0" + canonical).hexdigest()


class ResponseCache:
    def __init__(
        self,
        *,
        redis: Redis | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._local: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._redis = redis  # shared by the process (apiary.kit.redis), which closes it

    async def get(self, key: str) -> CachedResponse | None:
        now = time.monotonic()
        found = self._local.get(key)
        if found is not None:
            expires, response = found
            if expires > now:
                self._local.move_to_end(key)
                return response
            del self._local[key]
        if self._redis is not None:
            try:
                raw = await self._redis.get(f"apiary:cache:{key}")
            except Exception:  # a cache that is down is a miss, never an error
                return None
            if raw is not None:
                response = CachedResponse.loads(raw if isinstance(raw, bytes) else raw.encode())
                self._remember(key, response, now)
                return response
        return None

    async def put(self, key: str, response: CachedResponse) -> None:
        self._remember(key, response, time.monotonic())
        if self._redis is not None:
            try:
                await self._redis.set(f"apiary:cache:{key}", response.dumps(), ex=self._ttl)
            except Exception:  # losing a cache write costs a future miss, nothing more
                return

    async def forget_tenant(self, tenant_id: str) -> int:
        """Drop every entry of a tenant being deleted: here, and in Redis for every replica
        (another replica's in-process copies expire with the TTL). Returns the Redis
        entries removed."""
        prefix = f"{tenant_id}:"
        for key in [key for key in self._local if key.startswith(prefix)]:
            del self._local[key]
        if self._redis is None:
            return 0
        removed = 0
        async for key in self._redis.scan_iter(match=f"apiary:cache:{prefix}*", count=1000):
            removed += int(await self._redis.unlink(key))
        return removed

    def _remember(self, key: str, response: CachedResponse, now: float) -> None:
        self._local[key] = (now + self._ttl, response)
        self._local.move_to_end(key)
        while len(self._local) > self._max:
            self._local.popitem(last=False)

    async def close(self) -> None:
        self._local.clear()


_PARAMETERS_ONLY = frozenset({"messages", "stream", "stream_options", "user", "metadata", "cache"})


def bucket_key(tenant_id: str, body: dict[str, Any]) -> str:
    """The semantic cache's bucket: the tenant and every answer-changing parameter except
    the conversation, which the semantic cache compares by meaning."""
    parameters = {k: v for k, v in body.items() if k not in _PARAMETERS_ONLY}
    canonical = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)
    return f"{tenant_id}:" + hashlib.sha256(tenant_id.encode() + b"\0" + canonical).hexdigest()
