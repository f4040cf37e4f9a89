"""Finished spans, queued and exported in batches by a thread of the process's own.

This is the SDK's `BatchSpanProcessor` reduced to what Apiary needs. The SDK's hands each
span on through a shared batch processor that checks for shutdown, compares `os.getpid()`
with the pid it started in (a fork check, a system call per span) and counts the span for
its own metrics: about 2 µs a span of the GIL the requests being served need. Here a
finished span costs a length check and a deque append (both atomic under the GIL, so no
lock), and the fork check runs once, at the fork (`os.register_at_fork`).

The thread wakes every `delay_s`, or as soon as `batch` spans wait, and exports the spans
waiting when it woke, in batches of at most `batch`; woken by a full batch, it sends full
batches only. Spans that end while a POST is under way wait for the next wake: draining
the queue until it is empty instead sent, under a steady stream of spans, one small POST
after another (at a sampling ratio of 1, 138 spans a POST, 0.8 ms of the GIL each).

At most `max_queued` spans wait: past that, while a slow collector holds the export up,
new spans are dropped and counted (`dropped`), and a warning names how many. A request's
spans, queued together (`on_end_all`), are dropped together when they do not all fit, so
the bound does not cut a request's trace into pieces.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

log = logging.getLogger("apiary.tracing")


class SpanQueue:
    """A span processor (`on_end`, `force_flush`, `shutdown`) exporting in batches."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        delay_s: float = 1.0,
        max_queued: int = 8192,
        batch: int = 2048,
    ) -> None:
        self._exporter = exporter
        self._delay_s = delay_s
        self._max_queued = max_queued
        self._batch = batch
        self._queue: deque[ReadableSpan] = deque()
        self._wake = threading.Event()
        self._exporting = threading.Lock()  # the thread's export and `force_flush`'s
        self._closed = False
        self.dropped = 0
        self._thread = self._start()
        # A forked child has the queue but not the thread: it starts its own.
        weak = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := weak()) and method())

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="apiary-span-export", daemon=True)
        thread.start()
        return thread

    def _after_fork(self) -> None:
        self._queue.clear()  # the parent exports its own
        self._wake = threading.Event()
        self._exporting = threading.Lock()
        if not self._closed:
            self._thread = self._start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts (the SDK's processor interface)."""

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if len(queue) >= self._max_queued:
            self._drop(1)
            return
        queue.append(span)
        if len(queue) == self._batch:
            self._wake.set()

    def on_end_all(self, spans: Sequence[ReadableSpan]) -> None:
        """The spans of one request, queued at once (`RequestTrace.close`)."""
        queue = self._queue
        if len(queue) + len(spans) > self._max_queued:
            self._drop(len(spans))
            return
        before = len(queue)
        queue.extend(spans)
        if before < self._batch <= len(queue):
            self._wake.set()

    def _drop(self, count: int) -> None:
        dropped, self.dropped = self.dropped, self.dropped + count
        # A line on passing 1, 2, 4, 8... spans dropped, not a line a span.
        if dropped.bit_length() != self.dropped.bit_length():
            log.warning(
                "span queue full (%d spans waiting for the collector): %d dropped so far",
                len(self._queue),
                self.dropped,
            )

    def _run(self) -> None:
        while not self._closed:
            full = self._wake.wait(self._delay_s)  # False: the tick
            self._wake.clear()
            self._export_queued(partial=not full)

    def _export_queued(self, *, partial: bool = True) -> None:
        """Export the spans waiting now, in batches; `partial=False` leaves a last batch
        short of `batch` for the next wake."""
        with self._exporting:
            queue = self._queue
            waiting = len(queue)
            while waiting >= self._batch or (partial and waiting):
                size = min(waiting, self._batch)
                waiting -= size
                batch = [queue.popleft() for _ in range(size)]
                try:
                    self._exporter.export(batch)
                except Exception:  # the thread must outlive one failed export
                    log.exception("exporting %d spans failed", len(batch))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every queued span now (in the caller's thread)."""
        if self._closed:
            return False
        self._export_queued()
        return True

    def shutdown(self) -> None:
        """Export what is queued, stop the thread and shut the exporter down."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._export_queued()
        self._exporter.shutdown()
