"""The dashboard's execution page through GraphQL vs the REST calls it replaces (issue 22).

The execution page of the dashboard (web/src/routes/ExecutionDetail.tsx) loads, for a
finished execution, four REST resources at once: the execution with its subtasks, sources
and figures (`GET /api/v1/executions/{id}`), every agent (`GET /api/v1/agents`, for names),
the first page of its model calls (`GET .../ledger?limit=25`) and its events
(`GET .../events`, which replays a finished run's stream and ends). Through GraphQL it is one
query (`PAGE` below). This starts `apiary serve` (in-process runner, SQLite, as embedded;
`--postgres` for PostgreSQL and Redis from scripts/services.sh) on the fake upstream, runs
ten executions of five sub-agents to their end, then loads their pages both ways at
concurrency 10, taking REST and GraphQL in turn, and prints the page-load latency p50/p95
(a REST page load is its four calls in parallel, as a browser makes them: the slowest one).

    .venv/bin/python bench/graphql_page.py              # about a minute
    .venv/bin/python bench/graphql_page.py --loads 100  # a shorter run

(Not `bench/graphql.py`: a script's folder comes first on sys.path, and a file of that name
would stand in for graphql-core in every bench script that imports Apiary.)
The JSON of each run goes to bench/results/graphql-page-<date>.json. Everything it starts,
it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import RESULTS, Services  # the sibling scripts
from swarm import TERMINAL, start_apiary, start_databases, start_upstream, stop_databases

CONCURRENCY = 10
EXECUTIONS = 10
SUB_AGENTS = 5
LEDGER_PAGE = 25  # the dashboard's PAGE_SIZE
ROUNDS = 4  # REST and GraphQL in turn, so drift on a shared machine hits both alike
PAGE = """
query ExecutionPage($id: UUID!, $ledger: Int!) {
  execution(id: $id) {
    id agentId agentVersion task state cancelRequested answer error costUsd
    promptTokens completionTokens figures createdAt startedAt finishedAt inputs
    definition { name version model }
    agent { id name }
    subtasks { index prompt status result error model promptTokens completionTokens
               costUsd attempts toolCalls startedAt finishedAt }
    sources { documentId filename page section charStart charEnd }
    events { seq type data createdAt }
    ledger(first: $ledger) {
      totalCount
      nodes { id createdAt kind requestedModel route provider model promptTokens
              completionTokens costUsd cacheHit latencyMs status error }
    }
  }
}
"""

PageLoad = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


async def rest_page(session: aiohttp.ClientSession, execution_id: str) -> int:
    """The four calls at once; the bytes they brought."""
    api = "/api/v1"
    urls = [
        f"{api}/executions/{execution_id}",
        f"{api}/agents?limit=200",
        f"{api}/executions/{execution_id}/ledger?limit={LEDGER_PAGE}&offset=0",
        f"{api}/executions/{execution_id}/events",
    ]

    async def fetch(url: str) -> int:
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: {response.status} {body[:200]!r}")
            return len(body)

    return sum(await asyncio.gather(*(fetch(url) for url in urls)))


async def graphql_page(session: aiohttp.ClientSession, execution_id: str) -> int:
    payload = {"query": PAGE, "variables": {"id": execution_id, "ledger": LEDGER_PAGE}}
    async with session.post("/graphql", json=payload) as response:
        body = await response.read()
        if response.status != 200 or b'"errors"' in body:
            raise RuntimeError(f"POST /graphql: {response.status} {body[:300]!r}")
        return len(body)


async def load(
    session: aiohttp.ClientSession, page: PageLoad, ids: list[str], loads: int
) -> tuple[list[float], int]:
    """`loads` page loads, CONCURRENCY at a time; each one's latency (s), and the bytes of
    one page."""
    latencies: list[float] = []
    size = 0
    queue = iter(range(loads))

    async def worker() -> None:
        nonlocal size
        for n in queue:
            started = time.perf_counter()
            size = await page(session, ids[n % len(ids)])
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, size


async def seed(session: aiohttp.ClientSession) -> list[str]:
    """An agent and EXECUTIONS finished executions of SUB_AGENTS sub-agents each."""
    agent = await session.post(
        "/api/v1/agents", json={"name": "bench-page", "max_subagents": SUB_AGENTS}
    )
    agent_id = (await agent.json())["id"]
    ids = []
    for n in range(EXECUTIONS):
        started = await session.post(
            "/api/v1/executions",
            json={
                "agent_id": agent_id,
                "task": f"Benchmark page {n}: split this into parts",
                "options": {"max_agents": SUB_AGENTS},
            },
        )
        ids.append((await started.json())["id"])
    deadline = time.monotonic() + 120
    for execution_id in ids:
        while True:
            response = await session.get(f"/api/v1/executions/{execution_id}")
            state = (await response.json())["state"]
            if state in TERMINAL:
                if state != "succeeded":
                    raise RuntimeError(f"execution {execution_id} ended {state}")
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the seed executions did not finish in 2 minutes")
            await asyncio.sleep(0.2)
    return ids


def _ms(values: list[float], q: int) -> float:
    return 1000 * statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(base: str, key: str, loads: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=4 * CONCURRENCY)
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(
        base, headers=headers, timeout=timeout, connector=connector
    ) as session:
        ids = await seed(session)
        ways: dict[str, PageLoad] = {"rest": rest_page, "graphql": graphql_page}
        for page in ways.values():  # warm-up: connections, caches, first-call imports
            await load(session, page, ids, 2 * CONCURRENCY)
        latencies: dict[str, list[float]] = {name: [] for name in ways}
        sizes: dict[str, int] = {}
        for _ in range(ROUNDS):
            for name, page in ways.items():
                measured, sizes[name] = await load(session, page, ids, loads // ROUNDS)
                latencies[name] += measured
    return {
        name: {
            "page_loads": len(values),
            "http_requests_per_page": 4 if name == "rest" else 1,
            "bytes_per_page": sizes[name],
            "p50_ms": round(_ms(values, 50), 1),
            "p95_ms": round(_ms(values, 95), 1),
        }
        for name, values in latencies.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=400, help="page loads per way")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL and Redis")
    arguments = parser.parse_args()
    services = Services()
    databases = None
    with tempfile.TemporaryDirectory(prefix="apiary-graphql-bench-") as tmp:
        workdir = Path(tmp)
        try:
            extra: dict[str, str] = {}
            if arguments.postgres:
                databases, extra = start_databases(workdir)
            upstream = start_upstream(services, workdir)
            base, key = start_apiary(services, workdir, upstream, "inprocess", extra, [], 0)
            figures = asyncio.run(measure(base, key, arguments.loads))
        finally:
            services.stop_all()
            if databases is not None:
                stop_databases(databases)
    rest, graphql = figures["rest"], figures["graphql"]
    store = "PostgreSQL + Redis" if arguments.postgres else "SQLite"
    print(f"execution page, c={CONCURRENCY}, {store}, {rest['page_loads']} page loads each")
    print(f"{'':10}{'requests':>10}{'bytes':>10}{'p50 ms':>10}{'p95 ms':>10}")
    for name, row in figures.items():
        print(
            f"{name:10}{row['http_requests_per_page']:>10}{row['bytes_per_page']:>10}"
            f"{row['p50_ms']:>10}{row['p95_ms']:>10}"
        )
    print(
        f"graphql / rest: p50 {graphql['p50_ms'] / rest['p50_ms']:.2f}, "
        f"p95 {graphql['p95_ms'] / rest['p95_ms']:.2f}"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "when": stamp,
        "machine": platform.node(),
        "store": store,
        "concurrency": CONCURRENCY,
        "figures": figures,
    }
    (RESULTS / f"graphql-page-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
