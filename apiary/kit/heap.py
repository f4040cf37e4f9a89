"""Keeping CPython's cyclic garbage collector off the hot path.

The collector's full passes walk every tracked object. A started Apiary holds about 200k
of them (FastAPI, pydantic, SQLAlchemy; then LangGraph, once the first execution imports
it), and a 100-sub-agent execution allocates fast enough to set off a full pass every few
seconds: measured with `bench/swarm.py`, about a third of the CPU such an execution cost
went to the collector. Objects alive once start-up is over live as long as the process, so
`settle` moves them to the permanent generation (`gc.freeze`), which the collector no
longer visits; it still collects everything allocated afterwards.
"""

from __future__ import annotations

import gc

_settled: set[str] = set()


def settle(milestone: str) -> None:
    """Collect now, then freeze what is alive. Call it when start-up, or the first use of a
    heavy lazily imported library (`milestone` names which), is done; once per milestone."""
    if milestone in _settled:
        return
    _settled.add(milestone)
    gc.collect()
    gc.freeze()
