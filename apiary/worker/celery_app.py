"""The executions' Celery queue: the app's configuration and `enqueue`, which publishes an
execution for the workers. `apiary.worker.process` is the worker side.

The task takes only an execution id and reloads everything; running an execution is safe
twice. Late acknowledgement with `reject_on_worker_lost` means a worker killed mid-run
(even by SIGKILL) leaves the message unacknowledged, and the broker hands it to another
worker after the visibility timeout; that worker resumes from the LangGraph checkpoint.
This module imports no domain: the API process's runner publishes through it.
"""

from __future__ import annotations

import functools
import uuid

from celery import Celery

from apiary.config import Settings

TASK_NAME = "apiary.run_execution"
QUEUE = "apiary-executions"
# Where Kombu's Redis transport keeps the queue's messages (the metrics probe counts them,
# the requeue sweep reads them): one list per priority step (0, 3, 6, 9), the queue's own
# name for the default one, name + "\x06\x16" + step for the others (`Channel._q_for_pri`);
# a message a worker took and has not acknowledged sits in the `unacked` hash.
QUEUE_LISTS = tuple(QUEUE + step for step in ("", "\x06\x163", "\x06\x166", "\x06\x169"))
UNACKED = "unacked"


def restore_interval_s(visibility_timeout_s: int) -> int:
    """How often each worker sweeps for messages whose worker died: every 10 s, or a quarter
    of a shorter visibility timeout. A killed worker's job is taken up again within the
    visibility timeout plus this."""
    return max(1, min(10, visibility_timeout_s // 4))


def configured_app(redis_url: str, visibility_timeout_s: int) -> Celery:
    app = Celery("apiary", broker=redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s,
            # Kombu looks for unacknowledged messages past their timeout only every
            # interval x throttle seconds (10 x 10 by default), so a killed worker's job
            # would wait up to 100 s more: sweep on every tick, and tick often enough.
            "unacked_restore_interval": restore_interval_s(visibility_timeout_s),
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        # A forked process builds its runtime before it reports ready (`warm_child`); on a
        # loaded machine that takes longer than Celery's default 4 s.
        worker_proc_alive_timeout=60,
        task_ignore_result=True,
    )
    return app


@functools.cache
def _producer(redis_url: str, visibility_timeout_s: int) -> Celery:
    return configured_app(redis_url, visibility_timeout_s)


def enqueue(settings: Settings, execution_id: uuid.UUID) -> None:
    """Publish one execution for the workers (blocking: call it in a thread)."""
    assert settings.redis_url is not None
    from apiary.observability import tracing

    producer = _producer(settings.redis_url, settings.swarm.visibility_timeout_s)
    with tracing.span(f"send {TASK_NAME}", kind=tracing.SpanKind.PRODUCER):
        # The sender's trace goes with the message: the worker's spans join it.
        producer.send_task(TASK_NAME, args=[str(execution_id)], headers=tracing.inject())
