"""The Celery app: `apiary worker` runs executions from the Redis broker.

The task takes only an execution id and reloads everything; `run_execution` is safe to run
twice. Late acknowledgement with `reject_on_worker_lost` means a worker killed mid-run
(even by SIGKILL) leaves the message unacknowledged, and the broker hands it to another
worker after the visibility timeout; that worker resumes from the LangGraph checkpoint.
Each worker process keeps one event loop and one runtime (database pool, gateway, HTTP
connections) for all the tasks it runs, built at its first task and closed when the
process stops; `apiary worker` imports the engine before Celery forks its processes, so
they start warm.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from apiary.config import Settings, load_settings

log = logging.getLogger("apiary.worker")
WARM_DB_TIMEOUT_S = 5.0

if TYPE_CHECKING:
    from apiary.runtime import Runtime

TASK_NAME = "apiary.run_execution"
QUEUE = "apiary-executions"


def _app(redis_url: str, visibility_timeout_s: int) -> Celery:
    app = Celery("apiary", broker=redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        worker_hijack_root_logger=False,
        # A forked process builds its runtime before it reports ready (`warm_up`); on a
        # loaded machine that takes longer than Celery's default 4 s.
        worker_proc_alive_timeout=60,
        task_ignore_result=True,
    )
    return app


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("the Celery worker needs APIARY_REDIS_URL (its broker)")
    app = _app(settings.redis_url, settings.swarm.visibility_timeout_s)

    @app.task(name=TASK_NAME, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_execution_task(task: Any, execution_id: str) -> None:
        from apiary.swarm.engine import run_execution
        from apiary.swarm.lease import ExecutionBusy

        loop, runtime = _process_runtime(settings)
        try:
            loop.run_until_complete(run_execution(runtime, uuid.UUID(execution_id)))
        except ExecutionBusy as busy:
            # Another worker runs it (the broker redelivered it after its visibility
            # timeout), or one that died holds its lease: look again when the lease lapses.
            raise task.retry(countdown=busy.retry_after_s) from None
        finally:
            # The loop only runs during a job: nothing it queued may wait for the next one.
            loop.run_until_complete(runtime.writes.barrier())

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def warm_up(**_: Any) -> None:
        _process_runtime(settings)  # in each forked process, before it takes a task

    return app


def preload() -> None:
    """Import what tasks need, in the parent before Celery forks its processes."""
    import apiary.models  # every table, so foreign keys resolve
    import apiary.swarm.engine  # noqa: F401 - LangGraph and the graph
    from apiary.kit import heap

    heap.settle("worker")  # frozen before the fork, so the children share these pages


# This process's loop and runtime, built by its first task (never in the parent: its
# connections must not be shared across fork).
_process: tuple[asyncio.AbstractEventLoop, Runtime] | None = None


def _process_runtime(settings: Settings) -> tuple[asyncio.AbstractEventLoop, Runtime]:
    global _process
    if _process is None:
        from apiary.runtime import Runtime

        preload()  # a no-op when `apiary worker` did it before forking
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runtime = Runtime.build(settings)

        async def start() -> None:
            runtime.start()

        loop.run_until_complete(start())  # background work needs the running loop
        _process = (loop, runtime)
        loop.run_until_complete(_warm(runtime))
    return _process


async def _warm(runtime: Runtime) -> None:
    """What a process's first execution would otherwise pay for: the compiled graph, a
    database connection, the HTTP stack's asyncio backend (imported on first use)."""
    import anyio._backends._asyncio  # noqa: F401
    from sqlalchemy import text

    from apiary.swarm.engine import compiled_graph

    compiled_graph(runtime)
    try:  # best effort: a database that is down now fails the jobs, not the process
        async with asyncio.timeout(WARM_DB_TIMEOUT_S), runtime.session_factory() as session:
            await session.execute(text("SELECT 1"))
    except Exception as error:
        log.warning("worker warm-up: no database connection yet: %s", error)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]  # prefork children
@worker_shutdown.connect  # type: ignore[untyped-decorator]  # the solo pool's one process
def _close_process_runtime(**_: Any) -> None:
    global _process
    if _process is None:
        return
    loop, runtime = _process
    _process = None
    loop.run_until_complete(runtime.close())
    loop.close()


@functools.cache
def _producer(redis_url: str, visibility_timeout_s: int) -> Celery:
    return _app(redis_url, visibility_timeout_s)


def enqueue(settings: Settings, execution_id: uuid.UUID) -> None:
    """Publish one execution for the workers (blocking: call it in a thread)."""
    assert settings.redis_url is not None
    producer = _producer(settings.redis_url, settings.swarm.visibility_timeout_s)
    producer.send_task(TASK_NAME, args=[str(execution_id)])


def worker_app() -> Celery:
    """The app `apiary worker` runs, configured from the environment like `apiary serve`."""
    return make_celery(load_settings())
