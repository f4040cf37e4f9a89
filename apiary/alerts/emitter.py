"""Raising alerts where there is no transaction to join, and this process's alert workers.

A gateway call that crosses a budget threshold, a refused entitlement (whose request
rolls back) and an opening breaker hand an `AlertEvent` to `emit_soon`, which never blocks
and never raises: the event goes on a bounded in-process queue, and a background task
writes it (`alert_service.notify`, one transaction each), where the unique key makes it
once per tenant, kind, subject and period across every replica. A full queue drops the
event with a warning: an alert storm must not take memory from the calls.

The runtime installs its emitter and dispatcher here when it starts (the last one started
is used; a test process may run several apps on one database) and removes them on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from apiary.alerts.events import AlertEvent

log = logging.getLogger("apiary.alerts")

WRITE_ATTEMPTS = 3
WRITE_RETRY_S = 1.0
DRAIN_TIMEOUT_S = 5.0


class Wakeable(Protocol):
    def wake(self) -> None: ...


Writer = Callable[[AlertEvent], Coroutine[Any, Any, object]]


class AlertEmitter:
    def __init__(self, write: Writer, *, maxsize: int) -> None:
        self._write = write
        self._queue: asyncio.Queue[AlertEvent] = asyncio.Queue(maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None

    def emit(self, alert: AlertEvent) -> None:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            log.warning("alert queue full: %s for %s dropped", alert.kind, alert.subject)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alerts-emitter")

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._write_one(alert)
            finally:
                self._queue.task_done()

    async def _write_one(self, alert: AlertEvent) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self._write(alert)
                return
            except Exception as error:  # the database away: try again shortly, then give up
                if attempt + 1 == WRITE_ATTEMPTS:
                    log.error(
                        "alert %s (%s) not written: %s: %s",
                        alert.kind,
                        alert.subject,
                        type(error).__name__,
                        error,
                    )
                    return
                await asyncio.sleep(WRITE_RETRY_S * (attempt + 1))

    async def join(self) -> None:
        """Wait until every event queued so far is written (tests, shutdown)."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


_emitters: list[AlertEmitter] = []
_dispatchers: list[Wakeable] = []


def install(emitter: AlertEmitter, dispatcher: Wakeable | None) -> None:
    _emitters.append(emitter)
    if dispatcher is not None:
        _dispatchers.append(dispatcher)


def uninstall(emitter: AlertEmitter, dispatcher: Wakeable | None) -> None:
    with contextlib.suppress(ValueError):
        _emitters.remove(emitter)
    if dispatcher is not None:
        with contextlib.suppress(ValueError):
            _dispatchers.remove(dispatcher)


def emit_soon(alert: AlertEvent) -> None:
    """Queue `alert` to be written off the caller's transaction; never blocks or raises."""
    if _emitters:
        _emitters[-1].emit(alert)
    else:  # a CLI command with no runtime started: nothing runs to write it
        log.info("alert %s (%s) raised with no alert emitter running", alert.kind, alert.subject)


def wake_dispatchers() -> None:
    """New deliveries were committed: look for due ones now rather than at the next poll."""
    for dispatcher in _dispatchers:
        dispatcher.wake()
