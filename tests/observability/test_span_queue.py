"""The span queue between Apiary's spans and the OTLP exporter: batches, its bound, a failing
export, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from apiary.observability.span_queue import SpanQueue


class Recorder:
    """An exporter that keeps each batch it is given (and can be told to fail once)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.fail_next = False
        self.shut = False
        self.exported = threading.Event()

    def export(self, spans: Sequence[Any]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("collector away")
        self.batches.append(list(spans))
        self.exported.set()

    def shutdown(self) -> None:
        self.shut = True


def _queue(recorder: Recorder, **options: Any) -> SpanQueue:
    return SpanQueue(recorder, **options)  # type: ignore[arg-type]  # export and shutdown


def test_a_full_batch_is_exported_at_once_not_at_the_next_tick() -> None:
    recorder = Recorder()
    queue = _queue(recorder, delay_s=60, batch=3)
    try:
        for span in ("a", "b", "c"):
            queue.on_end(span)  # type: ignore[arg-type]  # any object passes through
        assert recorder.exported.wait(5), "a full batch waited for the minute's tick"
        assert recorder.batches == [["a", "b", "c"]]
    finally:
        queue.shutdown()


class Blocking(Recorder):
    """A collector that holds each export until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[Any]) -> None:
        self.started.set()
        assert self.release.wait(5)
        super().export(spans)


def test_spans_ending_during_an_export_wait_for_a_batch_not_a_post_of_their_own() -> None:
    recorder = Blocking()
    queue = _queue(recorder, delay_s=60, batch=4)
    try:
        for span in ("a", "b", "c", "d"):
            queue.on_end(span)  # type: ignore[arg-type]
        assert recorder.started.wait(5)
        queue.on_end("e")  # type: ignore[arg-type]  # while the first POST is under way
        recorder.release.set()
        assert recorder.exported.wait(5)
        time.sleep(0.2)  # time enough for a second POST, were one coming
        assert recorder.batches == [["a", "b", "c", "d"]]
        queue.force_flush()
        assert recorder.batches == [["a", "b", "c", "d"], ["e"]]
    finally:
        recorder.release.set()
        queue.shutdown()


def test_past_its_bound_spans_are_dropped_and_counted_and_the_rest_go_in_batches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    queue = _queue(recorder, delay_s=60, max_queued=5, batch=100)
    with caplog.at_level(logging.WARNING, logger="apiary.tracing"):
        for index in range(8):
            queue.on_end(index)  # type: ignore[arg-type]
    assert queue.dropped == 3
    assert "span queue full" in caplog.text
    queue.force_flush()
    assert recorder.batches == [[0, 1, 2, 3, 4]]
    queue.shutdown()


def test_a_failed_export_is_logged_and_the_next_spans_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    queue = _queue(recorder, delay_s=0.05, batch=2)
    try:
        recorder.fail_next = True
        with caplog.at_level(logging.ERROR, logger="apiary.tracing"):
            queue.on_end("lost-1")  # type: ignore[arg-type]
            queue.on_end("lost-2")  # type: ignore[arg-type]
            deadline = time.monotonic() + 5  # the failure is logged after the export raised
            while "exporting 2 spans failed" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        assert "exporting 2 spans failed" in caplog.text
        queue.on_end("kept")  # type: ignore[arg-type]
        assert recorder.exported.wait(5)
        assert recorder.batches == [["kept"]]
    finally:
        queue.shutdown()


def test_shutdown_exports_what_waits_and_shuts_the_exporter_down() -> None:
    recorder = Recorder()
    queue = _queue(recorder, delay_s=60, batch=2)
    for span in ("a", "b", "c"):
        queue.on_end(span)  # type: ignore[arg-type]
    queue.shutdown()
    assert [span for batch in recorder.batches for span in batch] == ["a", "b", "c"]
    assert all(len(batch) <= 2 for batch in recorder.batches)
    assert recorder.shut
    assert queue.force_flush() is False  # closed: nothing more is taken


def test_a_requests_spans_are_queued_together_and_dropped_together_past_the_bound() -> None:
    recorder = Recorder()
    queue = _queue(recorder, delay_s=60, max_queued=5, batch=4)
    try:
        queue.on_end_all(["a1", "a2", "a3"])  # type: ignore[list-item]
        queue.on_end_all(["b1", "b2"])  # type: ignore[list-item]  # a full batch wakes the thread
        assert recorder.exported.wait(5)
        assert recorder.batches == [["a1", "a2", "a3", "b1"]]
        queue.on_end_all(["c1", "c2", "c3", "c4", "c5"])  # type: ignore[list-item]
        assert queue.dropped == 5  # with "b2" waiting there is no room for all five
        queue.force_flush()
        assert recorder.batches[1:] == [["b2"]]
    finally:
        queue.shutdown()
