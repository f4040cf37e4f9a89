"""cProfile in `apiary serve` for bench/tracing_calls.py, which puts this directory first on
the server's PYTHONPATH: the first SIGUSR1 switches profiling on in the main thread (the
event loop's), the second switches it off and writes the counts to
`BENCH_CALL_COUNTS_OUT`. Nothing happens unless that variable is set."""

from __future__ import annotations

import os
import signal

if os.environ.get("BENCH_CALL_COUNTS_OUT"):
    import cProfile

    _profiles: list[cProfile.Profile] = []

    def _toggle(signum: int, frame: object) -> None:
        if not _profiles:
            _profiles.append(cProfile.Profile())
            _profiles[0].enable()
        else:
            _profiles[0].disable()
            _profiles[0].dump_stats(os.environ["BENCH_CALL_COUNTS_OUT"])

    signal.signal(signal.SIGUSR1, _toggle)
