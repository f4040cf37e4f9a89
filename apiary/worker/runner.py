"""Runners: how an execution id becomes a running execution.

`InProcessRunner` (embedded, the default) runs executions as asyncio tasks inside
`apiary serve` and, when it starts, resumes every execution left unfinished by the last
process. `CeleryRunner` (production) enqueues, and publishes again what lost its message
(`apiary.worker.requeue`): `apiary worker` processes run them. Either way, `enqueue` is
called after the transaction that created the execution commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from apiary.config import Settings
    from apiary.worker.requeue import IdleUnfinished

log = logging.getLogger("apiary.worker")

RESUME_RETRY_S = 5.0
ENQUEUE_RETRY_MIN_S = 0.5  # publishing an execution while the broker is down: backoff
ENQUEUE_RETRY_MAX_S = 5.0


# Runs one execution to its end (the swarm engine's `run`); raises `ExecutionBusy` while
# another process holds its lease.
RunExecution = Callable[[uuid.UUID], Awaitable[None]]
# The executions left unfinished by the last process.
ListUnfinished = Callable[[], Awaitable[list[uuid.UUID]]]


class Runner(Protocol):
    async def start(self) -> None: ...

    async def enqueue(self, execution_id: uuid.UUID) -> None: ...

    async def close(self) -> None: ...


class InProcessRunner:
    def __init__(self, run: RunExecution, unfinished: ListUnfinished) -> None:
        self._run_execution = run
        self._unfinished = unfinished
        self._started = False
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._resume_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._started = True
        # In the background: a database that is down at start-up must not stop the API
        # from serving (/readyz reports it); the scan is retried until it succeeds.
        self._resume_task = asyncio.create_task(self._resume(), name="resume-executions")

    async def _resume(self) -> None:
        while True:
            try:
                unfinished = await self._unfinished()
            except Exception as error:
                log.warning("cannot list unfinished executions yet (%s); retrying", error)
                await asyncio.sleep(RESUME_RETRY_S)
                continue
            for execution_id in unfinished:
                log.info("resuming execution %s", execution_id)
                await self.enqueue(execution_id)
            return

    async def enqueue(self, execution_id: uuid.UUID) -> None:
        if not self._started:
            raise RuntimeError("the in-process runner is not started")
        running = self._tasks.get(execution_id)
        if running is not None and not running.done():
            return  # already running here: enqueueing twice runs it once
        task = asyncio.create_task(self._run(execution_id), name=f"run-{execution_id}")
        self._tasks[execution_id] = task

    async def _run(self, execution_id: uuid.UUID) -> None:
        from apiary.db import database_unreachable
        from apiary.kit import heap
        from apiary.swarm.lease import ExecutionBusy

        heap.settle("swarm engine")  # LangGraph is imported now: out of the collector's way
        try:
            while True:
                try:
                    await self._run_execution(execution_id)
                    return
                except ExecutionBusy as busy:  # a run that died left its lease: wait it out
                    log.info("execution %s is leased elsewhere; %s", execution_id, busy)
                    await asyncio.sleep(busy.retry_after_s)
                except Exception as error:
                    if not database_unreachable(error):
                        raise
                    # Left unfinished by a database outage: resume it once the database is back.
                    log.warning("execution %s: database unreachable; retrying", execution_id)
                    await asyncio.sleep(RESUME_RETRY_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("execution %s stopped with an error", execution_id)
        finally:
            self._tasks.pop(execution_id, None)

    async def wait_idle(self) -> None:
        """Wait until no execution is running here (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        # Running executions are interrupted, not failed: the next start resumes them.
        tasks = list(self._tasks.values())
        if self._resume_task is not None:
            tasks.append(self._resume_task)
            self._resume_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


def _broker_unreachable() -> tuple[type[BaseException], ...]:
    """What publishing raises while Redis is down; anything else is a bug, raised at once
    rather than retried for ever. (Imported here: the API process loads redis and kombu
    only when it runs executions on Celery.)"""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (
        OperationalError,
        RedisConnectionError,
        RedisTimeoutError,
        ConnectionError,
        TimeoutError,
    )


class CeleryRunner:
    def __init__(self, settings: Settings, redis: Redis, idle_unfinished: IdleUnfinished) -> None:
        from apiary.worker.requeue import RequeueSweep

        self._settings = settings
        self._retrying: set[asyncio.Task[None]] = set()
        self._unreachable = _broker_unreachable()
        # Workers resume executions (a redelivered message carries the id); this publishes
        # again those whose message is gone.
        self.requeue = RequeueSweep(
            redis,
            idle_unfinished,
            self.enqueue,
            after_s=settings.swarm.requeue_after_s,
            interval_s=settings.swarm.requeue_interval_s,
        )

    async def start(self) -> None:
        self.requeue.start()

    async def enqueue(self, execution_id: uuid.UUID) -> None:
        try:
            await self._publish(execution_id)
        except self._unreachable as error:
            # The broker (Redis) is down: the execution is committed and answered 202, so
            # publish it once Redis is back rather than leave it queued for ever. On a task
            # of its own, so the request that created it is not held.
            log.warning(
                "execution %s: broker unreachable (%s); retrying",
                execution_id,
                type(error).__name__,
            )
            task = asyncio.create_task(self._publish_until_done(execution_id))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)

    async def _publish(self, execution_id: uuid.UUID) -> None:
        from apiary.worker.celery_app import enqueue

        await asyncio.to_thread(enqueue, self._settings, execution_id)

    async def _publish_until_done(self, execution_id: uuid.UUID) -> None:
        delay_s = ENQUEUE_RETRY_MIN_S
        while True:
            await asyncio.sleep(delay_s)
            try:
                await self._publish(execution_id)
            except self._unreachable:
                delay_s = min(delay_s * 2, ENQUEUE_RETRY_MAX_S)
                continue
            log.info("execution %s: published after the broker came back", execution_id)
            return

    async def close(self) -> None:
        await self.requeue.close()
        if self._retrying:  # never published: a replica's requeue sweep publishes them later
            count = len(self._retrying)
            log.error("%d executions not yet published wait for a requeue sweep", count)
        for task in list(self._retrying):
            task.cancel()
        self._retrying.clear()


def create_runner(
    settings: Settings,
    *,
    run: RunExecution,
    unfinished: ListUnfinished,
    idle_unfinished: IdleUnfinished,
    redis: Redis | None,
) -> Runner:
    """The runner `settings.runner` names; `run` and `unfinished` serve the in-process one,
    `idle_unfinished` and `redis` the Celery one's requeue sweep."""
    if settings.runner == "celery":
        if not settings.redis_url or redis is None:
            raise ValueError("APIARY_RUNNER=celery needs APIARY_REDIS_URL (the Celery broker)")
        return CeleryRunner(settings, redis, idle_unfinished)
    return InProcessRunner(run, unfinished)
