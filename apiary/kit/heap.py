"""Keeping CPython's cyclic garbage collector off the hot path.

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

import gc

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
