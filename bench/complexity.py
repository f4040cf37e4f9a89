"""The complexity scorer's cost per request, beside counting the same request's tokens.

The `complexity` routing policy scores every request it routes, so its cost is part of each
call. The baseline is what a router that reasons from token counts would spend: tiktoken's
o200k count of the same messages (`apiary.kit.tokens.count_messages`). Requests: a short
question, a multi-step task, and a 20,000-word document to analyse.

    .venv/bin/python bench/complexity.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiary.gateway.complexity import score
from apiary.kit import tokens

REQUESTS: dict[str, dict[str, Any]] = {
    "short question": {"messages": [{"role": "user", "content": "What is the capital of Peru?"}]},
    "multi-step task": {
        "messages": [
            {"role": "system", "content": "You are a careful analyst."},
            {
                "role": "user",
                "content": "Compare three database designs for a multi-tenant ledger, prove "
                "which one keeps per-tenant range scans fastest, then write the migration.",
            },
        ]
    },
    "20k-word document": {
        "messages": [{"role": "user", "content": "Analyze this design. " + "word " * 20_000}]
    },
}


def per_call_us(function: Callable[[], object], *, seconds: float = 1.0) -> float:
    function()  # warm caches (tiktoken's encoding, compiled patterns)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        function()
        calls += 1
    return elapsed / calls * 1e6


def main() -> None:
    print(f"{'request':<20} {'score()':>12} {'token count':>14} {'count / score':>14}")
    for name, request in REQUESTS.items():
        ours = per_call_us(lambda request=request: score(request))
        baseline = per_call_us(lambda request=request: tokens.count_messages(request["messages"]))
        print(f"{name:<20} {ours:>9.1f} µs {baseline:>11.1f} µs {baseline / ours:>13.1f}x")


if __name__ == "__main__":
    main()
