"""Heap probe for long runs (issue 16's soak): where a process's memory is, every few minutes.

Put this folder on the processes' PYTHONPATH and name a folder for the records:

    .venv/bin/python bench/load.py --profile soak \\
        --env PYTHONPATH=bench/heap_probe --env APIARY_HEAP_PROBE_DIR=/tmp/heap

Every `apiary serve` and `apiary worker` started so then writes a JSON line to
`APIARY_HEAP_PROBE_DIR/<pid>.jsonl` every `APIARY_HEAP_PROBE_S` seconds (300): its RSS,
glibc's own accounting (`mallinfo2`: bytes in use, free bytes kept in the arenas, mmapped
bytes), CPython's small-object allocator (arenas held, bytes in used and free blocks, from
`sys._debugmallocstats`), the collector's generations, the count of live objects by type
outside the frozen start-up set (with `APIARY_HEAP_PROBE_TRACE=TypeA,TypeB`, what holds the
newest of those), and the size of each SQLAlchemy LRU cache. Comparing two records tells a
leak (objects of some type keep growing), fragmentation (in-use flat, held memory rising), a
cache still filling and garbage waiting for the collector (objects rising, then falling at a
full pass) apart. So does `bench/load.py` itself (the harness: the fake upstream and the
sampler) when it runs with this folder on its own PYTHONPATH; other processes (Locust)
import this and do nothing.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo() -> dict[str, int]:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    info = fn()
    return {field[0]: int(getattr(info, field[0])) for field in _Mallinfo2._fields_}


_STAT = re.compile(r"^#?\s*([a-z][a-z #]+?)\s*=\s*([\d,]+)\s*$")


def _pymalloc() -> dict[str, int]:
    """`sys._debugmallocstats`'s totals: it writes to C's stderr, so fd 2 is lent to a file."""
    with tempfile.TemporaryFile(mode="w+") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        stats = {}
        for line in out:
            match = _STAT.match(line.strip())
            if match:
                stats[match.group(1).strip()] = int(match.group(2).replace(",", ""))
        return stats


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_LRU_CACHES: list[Any] = []  # SQLAlchemy's LRU caches, made after the probe started


def _watch_sqlalchemy_caches() -> None:
    """Keep each SQLAlchemy LRUCache made from now on (an engine's compiled-statement cache,
    500 entries at most by default, among them): statements of new shapes fill it, each
    entry holding its compiled form, so a cache still filling looks like a slow leak."""
    try:
        from sqlalchemy.util import _collections
    except ImportError:
        return
    cls: Any = _collections.LRUCache
    made = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        _LRU_CACHES.append(self)

    cls.__init__ = init


def _sqlalchemy_caches() -> list[tuple[int, int]]:
    return [(len(cache), cache.capacity) for cache in _LRU_CACHES]


def _holders(objects: list[object], kind: str, samples: int = 3, depth: int = 4) -> list[str]:
    """What keeps the newest few objects of type `kind` alive: a chain of referrer types
    (the first referrer that is not a frame or this probe's list, at each level)."""
    found = [o for o in objects if type(o).__qualname__ == kind][-samples:]
    chains = []
    for target in found:
        chain, current = [], target
        for _ in range(depth):
            referrers = [
                r
                for r in gc.get_referrers(current)
                if r is not objects and r is not found and type(r).__name__ != "frame"
            ]
            if not referrers:
                break
            current = referrers[0]
            chain.append(f"{type(current).__module__}.{type(current).__qualname__}")
        chains.append(" <- ".join(chain))
    return chains


def _record() -> dict[str, object]:
    objects = gc.get_objects()
    counts = collections.Counter(type(o).__qualname__ for o in objects)
    caches = _sqlalchemy_caches()
    traced = os.environ.get("APIARY_HEAP_PROBE_TRACE", "")
    holders = {kind: _holders(objects, kind) for kind in traced.split(",") if kind}
    del objects
    return {
        "t": time.time(),
        "rss": _rss(),
        "malloc": _mallinfo(),
        "pymalloc": _pymalloc(),
        "gc_count": gc.get_count(),
        "gc_stats": gc.get_stats(),
        "frozen": gc.get_freeze_count(),
        "threads": threading.active_count(),
        "objects": sum(counts.values()),
        "sqlalchemy_compiled_cache": caches,
        "holders": holders,
        "types": dict(counts.most_common(60)),
    }


def _run(folder: str, interval: float) -> None:
    path = os.path.join(folder, f"{os.getpid()}.jsonl")
    with open(path, "a") as out:
        out.write(json.dumps({"argv": sys.orig_argv, "pid": os.getpid()}) + "\n")
        while True:
            time.sleep(interval)
            out.write(json.dumps(_record()) + "\n")
            out.flush()


def _start() -> None:
    folder = os.environ.get("APIARY_HEAP_PROBE_DIR")
    argv = " ".join(sys.orig_argv)
    if not folder or not re.search(r"apiary\S*\s+(serve|worker)\b|bench/load\.py", argv):
        return
    os.makedirs(folder, exist_ok=True)
    _watch_sqlalchemy_caches()
    interval = float(os.environ.get("APIARY_HEAP_PROBE_S", "300"))
    threading.Thread(target=_run, args=(folder, interval), name="heap-probe", daemon=True).start()


_start()
