"""What `apiary serve` loads before anything asks for it: the gateway process's memory is
a stated target (under 150 MiB at load, docs/benchmarks.md), so heavy libraries that only
some configurations use are imported where they are used, never at start-up."""

from __future__ import annotations

import subprocess
import sys

# Each is tens of MiB resident, and needed only when configured or first used.
LAZY = (
    "redis",  # counters and cache, only with APIARY_REDIS_URL
    "numpy",  # the embedding model and the semantic cache
    "tokenizers",
    "safetensors",
    "llama_cpp",  # the local model, on its first call
    "aiohttp",  # a test and benchmark dependency only
    "langgraph",  # the swarm, when an execution runs
    "langchain_core",
    "celery",  # the production worker, not the API process
    "qdrant_client",  # knowledge bases, on first use
)


def test_the_app_starts_without_the_heavy_optional_libraries() -> None:
    probe = (
        "import sys, apiary.main; apiary.main.create_app(); "
        f"print(','.join(sorted(m for m in {LAZY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"
