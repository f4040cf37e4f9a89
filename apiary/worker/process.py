"""A worker process (`apiary worker`): its Celery app with the execution task, and the event
loop and runtime its tasks run on. This is the worker's composition root, as `main.py` is
the API's.

Each worker process keeps one event loop, on a thread of its own, and one runtime on it
(database pool, gateway, HTTP connections, ledger writer, group commit), built before its
first task and closed when the process stops. A task hands its execution to that loop and
blocks until it ends, so the message is acknowledged only then. With the threads pool (the
default) one process runs all its tasks' executions together on that loop, as `apiary
serve` does in-process: ten 100-agent executions share one pool, one group commit and one
ledger writer instead of ten processes each with their own, competing for the cores.
`apiary worker` imports the engine before Celery starts its pool, so processes start warm.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Celery
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from apiary.config import Settings, load_settings
from apiary.db import UNAVAILABLE_RETRY_AFTER_S as DATABASE_RETRY_S
from apiary.db import database_unreachable
from apiary.runtime import Runtime
from apiary.swarm.lease import ExecutionBusy
from apiary.worker.celery_app import TASK_NAME, configured_app

log = logging.getLogger("apiary.worker")
WARM_DB_TIMEOUT_S = 5.0
T = TypeVar("T")


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("the Celery worker needs APIARY_REDIS_URL (its broker)")
    app = configured_app(settings.redis_url, settings.swarm.visibility_timeout_s)

    @app.task(name=TASK_NAME, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_execution_task(task: Any, execution_id: str) -> None:
        executions = _process_loop(settings)
        try:
            execution = executions.runtime.swarm.run(uuid.UUID(execution_id))
            executions.run(_in_senders_trace(execution, _trace_headers(task.request)))
        except ExecutionBusy as busy:
            # Another worker runs it (the broker redelivered it after its visibility
            # timeout), or one that died holds its lease: look again when the lease lapses.
            raise task.retry(countdown=busy.retry_after_s) from None
        except Exception as error:
            if not database_unreachable(error):
                raise
            # PostgreSQL is down or restarting: the execution is left unfinished, and a
            # failed task would be acknowledged and forgotten. Run it again (it resumes
            # from its checkpoint) until the database is back.
            log.warning("execution %s: database unreachable; retrying", execution_id)
            raise task.retry(countdown=DATABASE_RETRY_S) from None

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def warm_child(**_: Any) -> None:
        _process_loop(settings)  # in each forked process, before it takes a task

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def warm_main(sender: Any, **_: Any) -> None:
        from celery.concurrency import get_implementation
        from celery.concurrency.prefork import TaskPool as PreforkPool

        # The threads and solo pools run tasks in this process; a prefork parent must
        # not start a loop thread or open connections its children would inherit.
        if not issubclass(get_implementation(sender.pool_cls), PreforkPool):
            _process_loop(settings)

    return app


def _trace_headers(request: Any) -> dict[str, str]:
    """The W3C trace headers `enqueue` put on the message (Celery hands a message's own
    headers back as attributes of the task's request)."""
    found: dict[str, str] = {}
    headers = getattr(request, "headers", None) or {}
    for name in ("traceparent", "tracestate"):
        value = getattr(request, name, None) or headers.get(name)
        if isinstance(value, str):
            found[name] = value
    return found


async def _in_senders_trace(execution: Coroutine[Any, Any, T], carrier: dict[str, str]) -> T:
    """Run the task's coroutine as a CONSUMER span in the trace of the request that sent it
    (on the loop's thread, whose context knows nothing of the task's)."""
    from apiary.observability import tracing

    with (
        tracing.attached(carrier),
        tracing.span(f"process {TASK_NAME}", kind=tracing.SpanKind.CONSUMER),
    ):
        return await execution


def preload() -> None:
    """Import what tasks need, in the parent before Celery forks its processes."""
    import apiary.models  # every table, so foreign keys resolve
    import apiary.swarm.engine  # noqa: F401 - LangGraph and the graph
    from apiary.kit import heap

    heap.settle("worker")  # frozen before the fork, so the children share these pages


class ExecutionLoop:
    """This process's event loop, running on its own thread, and the runtime that lives on
    it. Any thread may hand it a coroutine (`run`) and block until it is done."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="apiary-executions", daemon=True)
        self._thread.start()
        try:
            self.runtime = self.run(self._start(settings))
        except BaseException:  # no runtime: stop the thread, or each later task starts another
            self._stop()
            raise

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @staticmethod
    async def _start(settings: Settings) -> Runtime:
        runtime = Runtime.build(settings)  # on the loop that will use it
        try:
            await runtime.encryption.check_at_start()  # refuses without the tenants' KEKs
        except BaseException:
            await runtime.close()
            raise
        runtime.start()
        await _warm(runtime)
        return runtime

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        try:
            self.run(self.runtime.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


# This process's loop and runtime, built before its first task (never in a prefork
# parent: its connections and thread must not be shared across fork).
_process: ExecutionLoop | None = None
_process_lock = threading.Lock()  # the threads pool's first tasks may arrive together


def _process_loop(settings: Settings) -> ExecutionLoop:
    global _process
    with _process_lock:
        if _process is None:
            preload()  # a no-op when `apiary worker` did it before starting the pool
            _process = ExecutionLoop(settings)
        return _process


async def _warm(runtime: Runtime) -> None:
    """What a process's first execution would otherwise pay for: the compiled graph, a
    database connection, the HTTP stack's asyncio backend (imported on first use)."""
    import anyio._backends._asyncio  # noqa: F401
    from sqlalchemy import text

    runtime.swarm.graph  # noqa: B018 - compiled on first use
    try:  # best effort: a database that is down now fails the jobs, not the process
        async with asyncio.timeout(WARM_DB_TIMEOUT_S), runtime.session_factory() as session:
            await session.execute(text("SELECT 1"))
    except Exception as error:
        log.warning("worker warm-up: no database connection yet: %s", error)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]  # prefork children
@worker_shutdown.connect  # type: ignore[untyped-decorator]  # the threads and solo pools
def _close_process_loop(**_: Any) -> None:
    global _process
    with _process_lock:
        executions, _process = _process, None
    if executions is not None:
        executions.close()


def worker_app() -> Celery:
    """The app `apiary worker` runs, configured from the environment like `apiary serve`."""
    return make_celery(load_settings())
