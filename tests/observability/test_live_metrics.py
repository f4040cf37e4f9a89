"""`GET /metrics` of a running Apiary after real traffic, read as Prometheus reads it; the
dashboards and alert rules asking only for what it exports; and a real Prometheus
scraping it with deploy/prometheus's rules loaded."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes import Fail
from tests.observability.live import (
    API,
    BUDGET_USD,
    METRICS_TOKEN,
    REPO,
    Live,
    Samples,
    declared,
    drive,
    metric_names,
    samples,
    start,
    value,
)

pytestmark = pytest.mark.services

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus"
PROMETHEUS = "/usr/bin/prometheus"

# Every metric the issue asks for, by the name an operator's queries use.
EXPECTED = {
    # traffic, kept up to date as it happens
    "apiary_http_requests_total",
    "apiary_http_request_duration_seconds_bucket",
    "apiary_gateway_calls_total",
    "apiary_gateway_tokens_total",
    "apiary_gateway_cost_usd_total",
    "apiary_gateway_cache_saved_usd_total",
    "apiary_gateway_upstream_duration_seconds_bucket",
    "apiary_gateway_time_to_first_token_seconds_bucket",
    "apiary_limit_refusals_total",
    "apiary_ledger_write_failures_total",
    "apiary_ledger_entries_dropped_total",
    # worked out at scrape time
    "apiary_executions",
    "apiary_subagents_running",
    "apiary_celery_queue_depth",
    "apiary_celery_unacked",
    "apiary_celery_consumers",
    "apiary_knowledge_documents",
    "apiary_gateway_breaker_state",
    "apiary_tenant_budget_used_ratio",
    "apiary_db_pool_connections",
    "apiary_db_pool_capacity",
    "apiary_database_up",
    "apiary_redis_up",
    "apiary_redis_ping_seconds",
    "apiary_ledger_pending_entries",
}


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    topology = await start(tmp_path_factory.mktemp("observed"))
    try:
        yield await drive(topology)
    finally:
        await topology.down()


async def test_scrape_after_traffic_shows_what_happened(live: Live) -> None:
    found = samples(await live.scrape())
    missing = sorted(EXPECTED - set(found))
    assert not missing, f"not exported: {missing}"

    model = {"provider": "oai", "model": "gpt-4o-mini"}
    # Three plain calls and a streamed one from the test; the swarm's calls ran in the worker.
    assert value(found, "apiary_gateway_upstream_duration_seconds_count", **model) >= 4
    assert value(found, "apiary_gateway_time_to_first_token_seconds_count", **model) >= 1
    assert value(found, "apiary_gateway_tokens_total", direction="completion", **model) > 0
    assert value(found, "apiary_gateway_cost_usd_total", **model) > 0
    assert value(found, "apiary_limit_refusals_total", kind="budget") == 1
    assert value(found, "apiary_limit_refusals_total", kind="tenant_rpm") == 0

    assert value(found, "apiary_executions", state=live.execution_state) >= 1
    assert value(found, "apiary_executions", state="running") == 0
    assert value(found, "apiary_knowledge_documents") >= 1  # whatever its status by now
    assert value(found, "apiary_celery_queue_depth") == 0
    assert value(found, "apiary_celery_consumers") >= 1  # the idle worker waits on the queue

    assert value(found, "apiary_gateway_breaker_state", provider="oai", state="closed") == 1
    assert value(found, "apiary_gateway_breaker_state", provider="oai", state="open") == 0
    # The spender's month so far over its budget: the calls cost cents of its $50.
    ratio = value(found, "apiary_tenant_budget_used_ratio", tenant=live.tenant)
    assert 0 < ratio < 0.5
    # The swarm's calls count too, though they ran in the worker, not in this process.
    assert live.spent_usd > value(found, "apiary_gateway_cost_usd_total") > 0
    assert ratio == pytest.approx(live.spent_usd / BUDGET_USD, rel=0.01)
    tenants = {labels["tenant"] for labels, _ in found["apiary_tenant_budget_used_ratio"]}
    assert tenants == {live.tenant}  # a budget of 0 is no budget to report a share of

    assert value(found, "apiary_database_up") == 1
    assert value(found, "apiary_redis_up") == 1
    assert 0 < value(found, "apiary_redis_ping_seconds") < 2
    assert value(found, "apiary_db_pool_capacity") == 30
    assert value(found, "apiary_ledger_write_failures_total") == 0


async def test_the_worker_serves_the_swarms_model_calls(live: Live) -> None:
    found = samples(await live.scrape(live.worker_url))
    model = {"provider": "oai", "model": "gpt-4o-mini"}
    # The execution's decomposition, sub-agent and synthesis calls ran in the worker.
    assert value(found, "apiary_gateway_calls_total", status="ok", **model) >= 2
    assert value(found, "apiary_gateway_cost_usd_total", **model) > 0
    assert value(found, "apiary_gateway_upstream_duration_seconds_count", **model) >= 2
    assert value(found, "apiary_gateway_breaker_state", provider="oai", state="closed") == 1
    assert value(found, "apiary_ledger_write_failures_total") == 0
    # Shared state is the API replicas' to report, once.
    assert "apiary_executions" not in found
    async with httpx.AsyncClient(base_url=live.worker_url) as http:
        refused = await http.get("/metrics")
    assert refused.status_code == 401


async def test_scrape_without_the_token_is_refused(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert wrong.status_code == 401
    assert "apiary_executions" not in response.text


async def test_scrape_reports_redis_down_instead_of_failing(live: Live) -> None:
    await live.topology.redis_down()
    try:
        found = samples(await live.scrape())
    finally:
        await live.topology.redis_up()
    assert value(found, "apiary_redis_up") == 0
    assert "apiary_celery_queue_depth" not in found  # unknown, not guessed as 0
    assert value(found, "apiary_database_up") == 1


async def test_scrape_reports_the_database_down_and_ledger_writes_failing(live: Live) -> None:
    before = value(samples(await live.scrape()), "apiary_ledger_write_failures_total")
    chat = {"model": "default", "messages": [{"role": "user", "content": "while it is down"}]}
    auth = {"Authorization": f"Bearer {live.key}"}
    async with live.topology.http(API) as http:

        async def answered() -> bool:
            call = await http.post("/v1/chat/completions", headers=auth, json=chat)
            return call.status_code == 200

        # Served again (Redis may have just come back), with the key and limits cached.
        assert await _until(answered)
        await live.topology.postgres_down()
        try:
            # Cached, the call is answered; its ledger entry waits for the database.
            call = await http.post("/v1/chat/completions", headers=auth, json=chat)
            assert call.status_code == 200, call.text

            async def failed_writes() -> Samples | None:
                # The ledger's writer tries every half second: until one try has failed.
                scraped = samples(await live.scrape())
                failures = value(scraped, "apiary_ledger_write_failures_total")
                return scraped if failures > before else None

            found = await _until(failed_writes, timeout_s=15) or samples(await live.scrape())
        finally:
            await live.topology.postgres_up()
    assert value(found, "apiary_database_up") == 0
    assert "apiary_executions" not in found  # unknown while the database is down, not 0
    assert value(found, "apiary_redis_up") == 1
    assert value(found, "apiary_ledger_write_failures_total") > before
    assert value(found, "apiary_ledger_pending_entries") >= 1


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, expression) for every panel target of every dashboard."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"{path.name}: {panel.get('title')}", target["expr"]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def rule_expressions() -> tuple[set[str], list[tuple[str, str]]]:
    """(recording-rule names, (where, expression) of every rule) in deploy/prometheus."""
    recorded: set[str] = set()
    expressions = []
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule["alert"]
                if "record" in rule:
                    recorded.add(rule["record"])
                expressions.append((f"{path.name}: {name}", rule["expr"]))
    return recorded, expressions


async def test_dashboards_and_rules_ask_only_for_exported_metrics(live: Live) -> None:
    text = await live.scrape()
    exported = set(samples(text)) | declared(text)
    recorded, rules = rule_expressions()
    queries = list(dashboard_queries())
    assert len(queries) >= 20
    assert len(rules) >= 20
    unknown = {
        f"{where}: {name}"
        for where, expression in [*queries, *rules]
        for name in metric_names(expression)
        if name not in exported and name not in recorded
    }
    assert not unknown, "names nothing exports:\n" + "\n".join(sorted(unknown))


# -- a real Prometheus ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prometheus(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.fail("no Prometheus binary: `make deps-test` installs Debian's prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    token = workdir / "token"
    token.write_text(METRICS_TOKEN)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in sorted(RULES.glob("*.rules.yml"))],
                "scrape_configs": [
                    {
                        "job_name": job,
                        "authorization": {"credentials_file": str(token)},
                        "static_configs": [{"targets": [url.removeprefix("http://")]}],
                    }
                    for job, url in (("apiary", live.url), ("apiary-worker", live.worker_url))
                ],
            }
        )
    )
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "prometheus.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        shutil.rmtree(workdir / "data", ignore_errors=True)


async def _both(targets: Any) -> list[dict[str, Any]]:
    """The targets that are up, once both are (else nothing)."""
    up: list[dict[str, Any]] = await targets()
    return up if len(up) == 2 else []


async def _until(check: Any, timeout_s: float = 30.0) -> Any:
    """`await check()` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_apiary_and_evaluates_the_rules(
    live: Live, prometheus: str
) -> None:
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as http:

        async def target_up() -> list[dict[str, Any]]:
            targets = (await http.get("/api/v1/targets")).json()["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up"]

        up = await _until(lambda: _both(target_up))
        assert sorted(t["labels"]["job"] for t in up) == ["apiary", "apiary-worker"]

        groups = (await http.get("/api/v1/rules")).json()["data"]["groups"]
        expected_groups = {
            group["name"]
            for path in RULES.glob("*.rules.yml")
            for group in yaml.safe_load(path.read_text())["groups"]
        }
        assert {group["name"] for group in groups} == expected_groups
        broken = [
            f"{rule['name']}: {rule.get('lastError')}"
            for group in groups
            for rule in group["rules"]
            if rule.get("health") == "err"
        ]
        assert not broken

        async def recorded(query: str) -> list[dict[str, Any]]:
            answer = (await http.get("/api/v1/query", params={"query": query})).json()
            result: list[dict[str, Any]] = answer["data"]["result"]
            return result

        # A recording rule over a rate needs two scrapes: it has a value within seconds.
        rate = await _until(lambda: recorded("apiary:http_requests:rate5m"))
        assert rate, "apiary:http_requests:rate5m has no value"
        budget = await _until(
            lambda: recorded(f'apiary:tenant_budget_used:ratio{{tenant="{live.tenant}"}}')
        )
        assert budget
        assert 0 < float(budget[0]["value"][1]) < 0.5

        # Every dashboard query runs on the real engine without an error.
        failures = []
        for where, expression in dashboard_queries():
            expression = expression.replace("$__rate_interval", "5m")
            expression = re.sub(r"\$\{?\w+\}?", ".*", expression)  # a variable set to All
            answer = (await http.get("/api/v1/query", params={"query": expression})).json()
            if answer["status"] != "success":
                failures.append(f"{where}: {answer.get('error')}")
        assert not failures, "\n".join(failures)


async def test_a_failing_provider_opens_its_breaker_and_the_alert_goes_pending(
    live: Live, prometheus: str
) -> None:
    # Last in the module: the breaker then refuses calls to the provider for 30 s.
    live.topology.upstream.set_default("openai", Fail(500))
    try:
        async with live.topology.http(API) as http:
            chat = {"model": "default", "messages": [{"role": "user", "content": "fail"}]}
            auth = {"Authorization": f"Bearer {live.key}"}
            for _ in range(3):  # 3 attempts each (2 retries): the 5th failure opens it
                failed = await http.post("/v1/chat/completions", headers=auth, json=chat)
                assert failed.status_code >= 500
    finally:
        live.topology.upstream.set_default("openai", None)
    found = samples(await live.scrape())
    assert value(found, "apiary_gateway_breaker_state", provider="oai", state="open") == 1
    assert value(found, "apiary_gateway_calls_total", provider="none", status="error") >= 1

    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as http:

        async def breaker_alert() -> list[dict[str, Any]]:
            alerts = (await http.get("/api/v1/alerts")).json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "ApiaryProviderBreakerOpen"]

        alerts = await _until(breaker_alert)
    assert [(a["labels"]["provider"], a["state"]) for a in alerts] == [("oai", "pending")]
