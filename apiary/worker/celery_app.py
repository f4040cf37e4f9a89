"""The Celery app: `apiary worker` runs executions from the Redis broker.

The task takes only an execution id and reloads everything; `run_execution` is safe to run
twice. Late acknowledgement with `reject_on_worker_lost` means a worker killed mid-run
(even by SIGKILL) leaves the message unacknowledged, and the broker hands it to another
worker after the visibility timeout; that worker resumes from the LangGraph checkpoint.
Each task runs in a fresh event loop with a runtime of its own, closed afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import uuid

from celery import Celery

from apiary.config import Settings, load_settings

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
        task_ignore_result=True,
    )
    return app


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("the Celery worker needs APIARY_REDIS_URL (its broker)")
    app = _app(settings.redis_url, settings.swarm.visibility_timeout_s)

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def run_execution_task(execution_id: str) -> None:
        asyncio.run(_run(settings, uuid.UUID(execution_id)))

    return app


async def _run(settings: Settings, execution_id: uuid.UUID) -> None:
    import apiary.models  # noqa: F401 - every table, so foreign keys resolve in this process
    from apiary.kit import heap
    from apiary.runtime import Runtime
    from apiary.swarm.engine import run_execution

    heap.settle("worker")  # once per worker process (see apiary.kit.heap)
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        await run_execution(runtime, execution_id)
    finally:
        await runtime.close()


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
