"""An in-process job queue: ids in, a handler per id, N asyncio workers.

The embedded column's runner for ingestion until the swarm branch's worker lands; then the
enqueue call becomes a Celery `delay` of `tasks.ingest_document`, which is written to be
run by either (it takes an id, reloads, and is safe to run twice).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

log = logging.getLogger("apiary.knowledge.queue")

Handler = Callable[[uuid.UUID], Awaitable[None]]
Backlog = Callable[[], Awaitable[list[uuid.UUID]]]


class JobQueue:
    def __init__(self, name: str, *, workers: int = 1) -> None:
        self._name = name
        self._workers = workers
        self._queue: asyncio.Queue[uuid.UUID] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._resuming: asyncio.Task[None] | None = None

    def start(self, handler: Handler, *, backlog: Backlog | None = None) -> None:
        """Start the workers; needs the running event loop. `backlog` lists jobs a previous
        process left unfinished (the queue lives in memory): they are enqueued first."""
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._work(handler), name=f"{self._name}-{n}")
            for n in range(self._workers)
        ]
        if backlog is not None:
            self._resuming = asyncio.create_task(self._resume(backlog), name=f"{self._name}-r")
            self._tasks.append(self._resuming)

    async def _resume(self, backlog: Backlog) -> None:
        try:
            for job_id in await backlog():
                self.enqueue(job_id)
        except Exception:  # the database may not be migrated yet; new jobs still run
            log.exception("could not list the %s backlog", self._name)

    def enqueue(self, job_id: uuid.UUID) -> None:
        if self._queue is None:
            raise RuntimeError(f"the {self._name} queue is not started")
        self._queue.put_nowait(job_id)

    async def join(self) -> None:
        """Wait until the backlog and every job enqueued so far have finished."""
        if self._resuming is not None:
            await asyncio.shield(self._resuming)
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._queue = None
        self._resuming = None

    async def _work(self, handler: Handler) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            job_id = await queue.get()
            try:
                await handler(job_id)
            except Exception:  # a job records its own failure; this only keeps the worker up
                log.exception("%s job failed", self._name, extra={"job_id": str(job_id)})
            finally:
                queue.task_done()
