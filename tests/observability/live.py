"""A running Apiary for the observability tests, with real traffic behind its `/metrics`.

One `apiary serve` and one `apiary worker` (Celery) over a PostgreSQL and a Redis of their
own (tests/topology/harness.py), the fake upstream as the only provider, and
`APIARY_METRICS_TOKEN` set as a deployment sets it. `drive` sends what an operator's graphs
are about: /v1 calls (plain and streamed), a call refused by a budget, a swarm execution
run by the worker, and a knowledge upload.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.topology.conftest import new_key, new_tenant, wait_final
from tests.topology.harness import Topology

METRICS_TOKEN = "scrape-token-for-tests-0123456789"
BUDGET_USD = 50.0
API = "api-a"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Live:
    topology: Topology
    tenant: str  # the budgeted tenant's name
    spent_usd: float  # its month's spend, as its usage summary tells the tenant
    key: str  # an API key of the spender's
    execution_state: str

    @property
    def url(self) -> str:
        return self.topology.url(API)

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.topology.env['APIARY_WORKER_METRICS_PORT']}"

    async def scrape(self, url: str | None = None) -> str:
        async with httpx.AsyncClient(base_url=url or self.url, timeout=10) as http:
            response = await http.get(
                "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        return response.text


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by sample name (`x_total`, `x_bucket`, ...)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def declared(text: str) -> set[str]:
    """The sample names an exposition declares (HELP and TYPE), samples or not yet: a
    counter by provider and model has none until such a call happens."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    assert name in found, f"{name} is not exported"
    return sum(v for have, v in found[name] if all(have.get(k) == w for k, w in labels.items()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start(workdir: Path) -> Topology:
    return await Topology.up(
        workdir,
        model_delays={"gpt-4o-mini": 0.01, "gpt-4o": 0.01},
        extra_env={
            "APIARY_METRICS_TOKEN": METRICS_TOKEN,
            "APIARY_WORKER_METRICS_PORT": str(_free_port()),
            "APIARY_WORKER_METRICS_HOST": "127.0.0.1",
        },
        apis=(API,),
        workers=("worker-1",),
    )


async def drive(topology: Topology) -> Live:
    """The traffic; returns what it left for the assertions."""
    spender = await new_tenant(topology, "obs-spender")
    broke = await new_tenant(topology, "obs-broke")
    async with topology.http(API) as http:
        for tenant, budget in ((spender, BUDGET_USD), (broke, 0.0)):
            changed = await http.patch(
                "/api/v1/limits", headers=tenant.headers, json={"monthly_budget_usd": budget}
            )
            assert changed.status_code == 200, changed.text
        _, key = await new_key(topology, spender)
        auth = {"Authorization": f"Bearer {key}"}
        chat = {"model": "default", "messages": [{"role": "user", "content": "hello there"}]}
        for _ in range(3):
            answered = await http.post("/v1/chat/completions", headers=auth, json=chat)
            assert answered.status_code == 200, answered.text
        async with http.stream(
            "POST", "/v1/chat/completions", headers=auth, json={**chat, "stream": True}
        ) as streamed:
            assert streamed.status_code == 200
            body = b"".join([chunk async for chunk in streamed.aiter_bytes()])
            assert b"[DONE]" in body
        _, broke_key = await new_key(topology, broke)
        refused = await http.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {broke_key}"}, json=chat
        )
        assert refused.status_code == 402, refused.text

        agent = await http.post(
            "/api/v1/agents",
            headers=auth,
            json={"name": "observed", "model": "default", "max_subagents": 2},
        )
        assert agent.status_code == 201, agent.text
        started = await http.post(
            "/api/v1/executions",
            headers=auth,
            json={"agent_id": agent.json()["id"], "task": "say hello"},
        )
        assert started.status_code == 202, started.text
        execution = await wait_final(http, started.json()["id"], auth, timeout_s=120)

        base = await http.post(
            "/api/v1/knowledge-bases", headers=spender.headers, json={"name": "runbooks"}
        )
        assert base.status_code == 201, base.text
        uploaded = await http.post(
            f"/api/v1/knowledge-bases/{base.json()['id']}/documents",
            headers=spender.headers,
            files={
                "file": ("notes.txt", b"Restart the worker when the queue grows.", "text/plain")
            },
        )
        assert uploaded.status_code == 201, uploaded.text
    # The ledger writer flushes every half second: let this traffic's entries land.
    await asyncio.sleep(1.0)
    async with topology.http(API) as http:
        usage = await http.get("/api/v1/usage/summary", headers=spender.headers)
        assert usage.status_code == 200, usage.text
    return Live(
        topology,
        tenant=spender.name,
        spent_usd=usage.json()["cost_usd"],
        key=key,
        execution_state=execution["state"],
    )


# -- metric names in PromQL ---------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "start", "end", "atan2"}
)
# Grafana's built-in variables, substituted before the query reaches Prometheus.
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")


def metric_names(expression: str) -> set[str]:
    """The metric (or recording-rule) names a PromQL expression selects."""
    text = _GRAFANA_VARIABLE.sub("5m", expression)
    text = _STRINGS.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue  # a function, an aggregation or an operator
        names.add(name)
    return names
