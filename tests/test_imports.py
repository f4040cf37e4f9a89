"""What `apiary serve` loads before anything asks for it: the gateway process's memory is
a stated target (under 150 MiB at load, docs/benchmarks.md), so heavy libraries that only
some configurations or requests use are imported where they are used, never at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Each is several to tens of MiB resident, and needed only when configured or first used.
LAZY = (
    "redis",  # counters and cache, only with APIARY_REDIS_URL
    "numpy",  # the embedding model, the semantic cache, knowledge ingestion
    "tokenizers",
    "safetensors",
    "llama_cpp",  # the local model, on its first call
    "aiohttp",  # a test and benchmark dependency only
    "langgraph",  # the swarm, when an execution runs
    "langchain_core",
    "langchain_text_splitters",  # knowledge ingestion
    "pypdf",
    "docx",
    "bs4",
    "celery",  # the production worker, not the API process
    "qdrant_client",  # knowledge bases, on first use
    "fpdf",  # an invoice's PDF, when one is downloaded
    "stripe",  # payments, only with APIARY_BILLING__STRIPE__API_KEY or a webhook
)

PROBE = f"""
import sys
from fastapi.testclient import TestClient
import apiary.main

with TestClient(apiary.main.create_app()) as client:  # runs the lifespan: start-up work
    assert client.get("/readyz").status_code == 200
print(",".join(sorted(m for m in {LAZY!r} if m in sys.modules)))
"""


def test_the_app_starts_without_the_heavy_optional_libraries(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(tmp_path)
    apiary = Path(sys.executable).parent / "apiary"
    subprocess.run([apiary, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"
