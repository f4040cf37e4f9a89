"""Keeping CPython's cyclic garbage collector off the hot path, and freed memory out of RSS.

The collector's full passes walk every tracked object. A started Apiary holds about 200k
of them (FastAPI, pydantic, SQLAlchemy; then LangGraph, once the first execution imports
it), and a 100-sub-agent execution allocates fast enough to set off a full pass every few
seconds: measured with `bench/swarm.py`, about a third of the CPU such an execution cost
went to the collector. Objects alive once start-up is over live as long as the process, so
`settle` moves them to the permanent generation (`gc.freeze`), which the collector no
longer visits; it still collects everything allocated afterwards.

The default thresholds (a young pass every 700 allocations) still cost a swarm of 100
about a fifth of its CPU, mostly in passes over the same in-flight sub-agents' objects
again and again. `THRESHOLDS` makes young passes rarer (each one finds more garbage) and
keeps the full passes' default ratio (one per ten middle passes, about ten million
allocations, subject to CPython's rule that a full pass waits until a quarter of the old
objects are new), so garbage in cycles (tracebacks, abandoned generators and the
connections they hold) does not wait much longer than before to be collected.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from typing import cast

THRESHOLDS = (50_000, 20, 10)  # young, middle, full: see gc.set_threshold

_settled: set[str] = set()


def settle(milestone: str) -> None:
    """Collect now, then freeze what is alive. Call it when start-up, or the first use of a
    heavy lazily imported library (`milestone` names which), is done; once per milestone."""
    if milestone in _settled:
        return
    _settled.add(milestone)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


# -- giving freed memory back ---------------------------------------------------------------
#
# glibc's malloc keeps what a process frees in its arenas for reuse and returns it to the
# system only from the top of the main heap. A long-running server that allocates and frees
# many mid-sized buffers (result sets, request bodies, JSON) from several threads ends up
# with free chunks scattered through its heaps: the soak of issue 16 showed each Celery
# worker's RSS rising about 0.6 MiB a minute at 50 req/s while the memory in use (malloc's
# own count, and the Python heap traced by tracemalloc) stayed flat, the difference being
# free chunks malloc held. `malloc_trim(0)` returns every whole free page of every arena
# (madvise, since glibc 2.8), so a periodic call keeps RSS at what is in use; each call
# costs about a millisecond and holds each arena's lock only while it walks that arena.
#
# Before trimming, the same thread runs a full collection. With `THRESHOLDS` a full pass
# comes about every ten million allocations, and garbage in reference cycles (a closed
# connection and its parser, a SQLAlchemy expression and its comparator, an abandoned
# task's frames) waits for it: the hour's soak of issue 16 (bench/heap_probe) showed a
# worker's live-object count climb from 26k to 59k over 35 minutes at 50 req/s and drop
# back at the first full pass, with Python's allocator holding a new 1 MiB arena for every
# few thousand objects of it, which it keeps once partly used again. That was the workers'
# RSS growth. Collected each minute, such garbage never piles up; a pass over the objects
# not frozen at start-up takes a few milliseconds, holding the GIL for that long.

_trimmer: threading.Thread | None = None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None on another C library (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], int], trim)


def trim() -> bool:
    """Return the heap's free pages to the system now; False where malloc cannot."""
    release = _malloc_trim()
    if release is None:
        return False
    release(0)
    return True


def start_trimming(interval_s: float) -> bool:
    """Collect cyclic garbage and trim the heap every `interval_s` seconds from a daemon
    thread, for the life of the process (0 turns it off). True when trimming runs."""
    global _trimmer
    release = _malloc_trim()
    if interval_s <= 0 or release is None or _trimmer is not None:
        return _trimmer is not None

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            gc.collect()
            release(0)  # ctypes drops the GIL for the call: other threads run on

    _trimmer = threading.Thread(target=loop, name="malloc-trim", daemon=True)
    _trimmer.start()
    return True
