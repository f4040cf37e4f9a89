"""The process's Redis client: one connection pool and one timeout policy, shared by every
part that uses Redis (the counters behind limits and budgets, the response cache, the
swarm's sub-agent slots, conversation memory, the notifier, the platform metrics' probe).

Built once by the composition root when `APIARY_REDIS_URL` is set, and closed by it after
every part that uses it has stopped; the parts never close it themselves. One policy
means one answer to "what happens when Redis hangs": a connection that cannot be made in
`CONNECT_TIMEOUT_S`, or a reply that takes longer than `COMMAND_TIMEOUT_S`, is an outage,
and each part's documented fault policy applies (docs/architecture.md, "Fault policies").
Reads that are meant to wait longer say so per call (the notifier's pub/sub reader asks
with its own timeout). The counters' batched lane is a dedicated connection made with the
same settings (`apiary.kv.redis_store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 2.0
# An idle pooled connection is checked (PING) before it is used again after this long, so
# one that a restarted Redis dropped is replaced instead of failing the command.
HEALTH_CHECK_INTERVAL_S = 30


def connect(url: str) -> Redis:
    """A client over a new connection pool, with the policy above (connections are made
    on first use, so this never blocks or fails on an unreachable Redis)."""
    from redis.asyncio import Redis  # only when configured: it costs 20 MiB

    return Redis.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
