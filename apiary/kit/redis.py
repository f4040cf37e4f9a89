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
# A pooled connection Redis closed (a restart) is replaced as it is handed out. One that died
# without being closed (a network cut) is found by a PING before it is used again after this
# long; the command that found it fails (nothing is retried: an INCRBY sent twice would
# count twice), and the next one gets a new connection.
HEALTH_CHECK_INTERVAL_S = 30


def connect(url: str) -> Redis:
    """A client over a new connection pool, with the policy above (connections are made
    on first use, so this never blocks or fails on an unreachable Redis)."""
    from redis.asyncio import Redis  # only when configured: it costs 20 MiB
    from redis.maint_notifications import MaintNotificationsConfig

    return Redis.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        # Off, as Apiary speaks RESP2, where these notifications never come. Left on
        # ("auto"), redis-py 8 also skips its check that a pooled connection is still open
        # before it hands it out: after a Redis restart every pooled connection then fails
        # its next command (an API call answered 503) instead of being replaced.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
