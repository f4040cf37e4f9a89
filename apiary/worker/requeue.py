"""Publishing again the executions whose Celery message was lost.

With Redis as the broker, an execution's message waits in the queue's list until a worker
takes it, then sits in Kombu's `unacked` hash until the worker acknowledges it after the
run (late acknowledgement); a dead worker's message goes back to the list after the
visibility timeout. Two gaps remain where a committed execution has no message anywhere,
and so would stay `queued` (or half run) for ever:

- a worker takes a message from the list (BRPOP) and then records it in the hash, two
  round trips: a Redis that stops between them has lost it;
- a Redis restarted without its data (no persistence, a replacement node) has lost every
  message.

So each API process with the Celery runner sweeps every `swarm.requeue_interval_s`, one
replica at a time (a Redis lock): an unfinished execution no run has held for
`swarm.requeue_after_s` (`idle_unfinished`) whose id is in no message of the lists or
the hash, in two sweeps running (whichever replicas ran them: the last sweep's misses are
kept in Redis), is published again. Two, because the broker is not read in one atomic
step: a message moving between list and hash while it is read (a worker taking it, Kombu
restoring a dead worker's) can be missed once, never twice. A duplicate would do no harm
anyway: a run holds the execution's lease (`apiary.swarm.lease`), and a finished
execution is not run again. An execution is published again at most `MAX_REQUEUES` times
(counted in Redis; a run that keeps losing its message, or keeps failing without
finishing, is then logged once as an error, for an operator to look at), and a message of
ours the sweep cannot read stops the sweep rather than have it publish every execution
again. The broker is read only when the database names a candidate, which an
execution waiting in a long backlog also is: the lists are then read in pages, once a sweep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from apiary.db import utcnow
from apiary.observability.metrics import EXECUTIONS_REQUEUED
from apiary.worker.celery_app import QUEUE_LISTS, TASK_NAME, UNACKED

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("apiary.worker")

LOCK_KEY = "apiary:requeue-sweep"
MISSING_KEY = "apiary:requeue-missing"  # the ids the last sweep found no message for
REQUEUES_KEY = "apiary:requeued:{}"  # times an execution was published again
MAX_REQUEUES = 3
REQUEUES_TTL_S = 86_400  # renewed while the execution is still swept
PAGE = 500  # messages read from the list per round trip
# The unfinished executions idle since a time (the repository's `idle_unfinished`).
IdleUnfinished = Callable[[datetime], Awaitable[list[uuid.UUID]]]
Publish = Callable[[uuid.UUID], Awaitable[None]]


class UnreadableMessage(Exception):
    """A message for `apiary.run_execution` whose execution id cannot be read."""


def execution_of(message: Any) -> str | None:
    """The execution id a Kombu message for `apiary.run_execution` carries; None for
    another task's. Celery's message protocol 2: the body is `[args, kwargs, embed]`,
    base64 on Redis."""
    try:
        if message["headers"]["task"] != TASK_NAME:
            return None
    except (KeyError, TypeError):
        return None
    try:
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(orjson.loads(body)[0][0])
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise UnreadableMessage(f"{TASK_NAME} message {message.get('headers', {})}") from error


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ids(raw_messages: Iterable[bytes | str], *, unacked: bool) -> set[str]:
    found: set[str] = set()
    for raw in raw_messages:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # not a Kombu message: not ours
        if unacked:  # the hash holds [message, exchange, routing key]
            message = message[0] if isinstance(message, list) and message else None
        if isinstance(message, dict) and (execution_id := execution_of(message)):
            found.add(execution_id)
    return found


async def ids_in_broker(redis: Redis) -> set[str]:
    """The execution ids of every message waiting in the queue or held by a worker.
    Raises `UnreadableMessage`."""
    found: set[str] = set()
    for key in QUEUE_LISTS:
        start = 0
        while page := await redis.lrange(key, start, start + PAGE - 1):
            found |= _ids(page, unacked=False)
            start += PAGE
    # The messages workers hold: a few per worker, so one read.
    return found | _ids(await redis.hvals(UNACKED), unacked=True)


class RequeueSweep:
    """Every `interval_s`, publishes again what `sweep` finds; runs in the API processes."""

    def __init__(
        self,
        redis: Redis,
        idle_unfinished: IdleUnfinished,
        publish: Publish,
        *,
        after_s: float,
        interval_s: float,
    ) -> None:
        self._redis = redis
        self._idle_unfinished = idle_unfinished
        self._publish = publish
        self._after_s = after_s
        self._interval_s = interval_s
        self._owner = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="requeue-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> list[uuid.UUID]:
        """Publish again each idle unfinished execution no message named in this sweep or
        the last; those published."""
        idle_since = utcnow() - timedelta(seconds=self._after_s)
        candidates = await self._idle_unfinished(idle_since)
        if not candidates:
            await self._redis.delete(MISSING_KEY)
            return []
        in_broker = await ids_in_broker(self._redis)
        missing = {str(c) for c in candidates if str(c) not in in_broker}
        before = {_text(member) for member in await self._redis.smembers(MISSING_KEY)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(MISSING_KEY)
            if first_misses := missing - before:
                pipe.sadd(MISSING_KEY, *first_misses)
                pipe.expire(MISSING_KEY, max(1, int(self._interval_s * 3)))
            await pipe.execute()
        published = []
        for execution_id in sorted(missing & before):
            if await self._published_too_often(execution_id):
                continue
            log.warning(
                "execution %s has no message in the broker (lost with Redis?); publishing it again",
                execution_id,
            )
            await self._publish(uuid.UUID(execution_id))
            EXECUTIONS_REQUEUED.inc()
            published.append(uuid.UUID(execution_id))
        return published

    async def _published_too_often(self, execution_id: str) -> bool:
        key = REQUEUES_KEY.format(execution_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, REQUEUES_TTL_S)
            times, _ = await pipe.execute()
        if times == MAX_REQUEUES + 1:  # said once; it stays unfinished for an operator
            log.error(
                "execution %s lost its message again after being published again %d times; "
                "not published again",
                execution_id,
                MAX_REQUEUES,
            )
        return int(times) > MAX_REQUEUES

    async def _claim(self) -> bool:
        """This replica's turn: one sweep an interval across the replicas."""
        ttl_ms = max(1, int(self._interval_s * 1000 * 0.9))
        return bool(await self._redis.set(LOCK_KEY, self._owner, nx=True, px=ttl_ms))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                if await self._claim():
                    await self.sweep()
            except Exception as error:  # Redis or the database away, a message unread: next time
                log.warning("the requeue sweep failed (%s: %s)", type(error).__name__, error)
