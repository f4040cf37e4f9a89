"""`apiary serve` and `apiary worker` hand freed heap pages back (apiary/kit/heap.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Fills the heap with 1 KiB buffers (malloc's, not Python's small-object allocator), frees
# all but one in 64 so free chunks lie between live ones (a buffer kept at the top of the
# heap stops malloc shrinking it from the end), then reports RSS, lets the trimmer run, and
# reports RSS again.
_FRAGMENT = textwrap.dedent(
    """
    import time
    from apiary.kit import heap

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    buffers = [bytearray(1024) for _ in range(160_000)]
    kept = buffers[::64]
    del buffers
    time.sleep(0.3)
    before = rss_mib()
    assert heap.start_trimming(0.1)
    time.sleep(0.5)
    print(before, rss_mib(), len(kept))
    """
)


def test_freed_memory_leaves_rss_once_the_trimmer_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    before, after, _ = (float(x) for x in run.stdout.split())
    # 160 MiB allocated, about 2.5 MiB of it still in use: the rest is free inside the heap
    # until the trimmer returns it.
    assert before > 120, f"the heap did not keep the freed buffers ({before:.0f} MiB)"
    assert after < before - 100, f"RSS {before:.0f} -> {after:.0f} MiB after trimming"


# Garbage in reference cycles, with the collector's own passes held off (as Apiary's
# thresholds hold full passes off for about ten million allocations): the trimmer's
# periodic full collection frees it.
_CYCLES = textwrap.dedent(
    """
    import gc, time, weakref
    from apiary.kit import heap

    gc.disable()

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        a.payload = bytearray(64 * 1024)
        return weakref.ref(a)

    refs = [cycle() for _ in range(200)]
    alive_before = sum(ref() is not None for ref in refs)
    assert heap.start_trimming(0.1)
    time.sleep(0.5)
    print(alive_before, sum(ref() is not None for ref in refs))
    """
)


def test_garbage_in_cycles_is_collected_once_the_trimmer_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _CYCLES], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    before, after = (int(x) for x in run.stdout.split())
    assert before == 200
    assert after == 0
