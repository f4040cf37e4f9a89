"""/api/v1/usage: totals, series and the CSV export, over ledgers written by real /v1 calls
and over entries inserted with chosen times and costs."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apiary.authz.permissions import Role
from apiary.gateway import catalog
from apiary.gateway.config import PriceConfig
from apiary.gateway.providers.base import Usage
from apiary.runtime import Runtime
from apiary.usage.ledger import store_entries
from tests.factories import TenantFixture, make_api_key, make_member, make_tenant
from tests.fakes import Reply
from tests.gateway.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.both_databases

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello usage"}]
MARCH = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}
M = 1_000_000


def price(model: str) -> catalog.ModelInfo:
    info = catalog.lookup("", model, overrides={})
    assert info is not None
    return info


def ledger_row(tenant: TenantFixture, at: datetime, **columns: Any) -> dict[str, Any]:
    """One ledger entry's columns: a priced gpt-4o-mini chat call unless told otherwise."""
    model = columns.get("model", "gpt-4o-mini")
    prompt, completion = columns.get("prompt_tokens", 1000), columns.get("completion_tokens", 100)
    cached = columns.get("cached_tokens", 0)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "created_at": at,
        "tenant_id": uuid.UUID(tenant.id),
        "api_key_id": None,
        "user_id": None,
        "execution_id": None,
        "agent_id": None,
        "kind": "chat",
        "requested_model": model,
        "route": None,
        "reason": "explicit",
        "provider": "oai",
        "model": model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "tokens_estimated": False,
        "cost_usd": catalog.cost_usd(
            catalog.lookup("", model, overrides={}), Usage(prompt, completion, cached)
        ),
        "priced": True,
        "cache_hit": False,
        "saved_usd": 0.0,
        "latency_ms": 12.0,
        "ttft_ms": None,
        "fallback_path": [],
        "status": "ok",
        "error": None,
        "streamed": False,
    }
    row.update(columns)
    return row


async def insert_rows(runtime: Runtime, rows: list[dict[str, Any]]) -> None:
    async with runtime.session_factory() as session:
        await store_entries(session, rows)
        await session.commit()


async def get(
    client: httpx.AsyncClient, path: str, caller_headers: dict[str, str], **params: str
) -> httpx.Response:
    return await client.get(f"/api/v1/usage/{path}", headers=caller_headers, params=params)


def csv_lines(response: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.text)))


# --- totals over real gateway calls -------------------------------------------------------


async def test_summary_matches_the_ledger_of_real_calls(gateway: Gateway) -> None:
    openai_client = gateway.client()
    gateway.upstream.script("openai", Reply(usage=(1200, 300), cached_tokens=200))
    await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    await openai_client.chat.completions.create(model="claude/claude-sonnet-4", messages=HELLO)
    await openai_client.chat.completions.create(model="lab/mystery-7b", messages=HELLO)
    await openai_client.embeddings.create(model="oai/text-embedding-3-small", input="alpha")
    entries = await gateway.ledger()
    assert len(entries) == 5

    async with gateway.http() as http:
        response = await get(http, "summary", gateway.tenant.admin.headers, baseline="gpt-4o")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["calls"] == 5
    assert body["errors"] == 0
    assert body["prompt_tokens"] == sum(e.prompt_tokens for e in entries)
    assert body["completion_tokens"] == sum(e.completion_tokens for e in entries)
    assert body["cached_tokens"] == 200
    priced_cost = sum(e.cost_usd for e in entries if e.cost_usd is not None)
    assert body["cost_usd"] == pytest.approx(priced_cost)
    assert body["cost_usd"] > 0
    assert body["unpriced_calls"] == 1
    assert (body["cache_hits"], body["cache_hit_rate"], body["saved_by_cache_usd"]) == (0, 0, 0)

    # The baseline prices the same tokens (the provider-cached part at gpt-4o's cached price)
    # for the priced chat calls: the unpriced one and the embedding are left out.
    compared = [e for e in entries if e.priced and e.kind == "chat"]
    gpt4o = price("gpt-4o")
    baseline_cost = sum(
        catalog.cost_usd(gpt4o, Usage(e.prompt_tokens, e.completion_tokens, e.cached_tokens)) or 0
        for e in compared
    )
    actual = sum(e.cost_usd or 0 for e in compared)
    baseline = body["baseline"]
    assert baseline["model"] == "gpt-4o"
    assert (baseline["compared_calls"], baseline["excluded_calls"]) == (3, 2)
    assert baseline["cost_usd"] == pytest.approx(baseline_cost)
    assert baseline["actual_cost_usd"] == pytest.approx(actual)
    assert baseline["savings_usd"] == pytest.approx(baseline_cost - actual)
    assert baseline["routing_savings_usd"] == pytest.approx(baseline_cost - actual)
    assert baseline["cache_savings_usd"] == 0


async def test_another_tenant_sees_none_of_the_usage(
    gateway: Gateway, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await gateway.client().chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    [entry] = await gateway.ledger()
    other = await make_tenant(runtime, client, "other-co")
    other_key = await make_api_key(runtime, other, Role.TENANT_ADMIN)
    now = datetime.now(UTC)
    window = {
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(days=1)).isoformat(),
    }

    for caller in (other.admin, other_key):
        summary = await get(client, "summary", caller.headers, **window)
        assert summary.json()["calls"] == 0
        for group_by in ("day", "model", "api_key"):
            series = await get(client, "series", caller.headers, group_by=group_by, **window)
            assert series.json()["rows"] == []
        export = await get(client, "export.csv", caller.headers, **window)
        assert csv_lines(export) == []
        assert str(entry.id) not in export.text

    own = await get(client, "summary", gateway.tenant.admin.headers, **window)
    assert own.json()["calls"] == 1


# --- ranges and series over inserted entries ----------------------------------------------


async def test_days_split_at_midnight_utc_and_ranges_are_half_open(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    late = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    midnight = datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)
    await insert_rows(
        runtime,
        [
            ledger_row(tenant, late, prompt_tokens=10),
            ledger_row(tenant, midnight, prompt_tokens=20),
            ledger_row(tenant, midnight + timedelta(hours=5), prompt_tokens=40),
        ],
    )
    headers = tenant.admin.headers

    series = (await get(client, "series", headers, group_by="day", **MARCH)).json()
    days = [(r["key"], r["day"], r["calls"], r["prompt_tokens"]) for r in series["rows"]]
    assert days == [("2026-03-01", "2026-03-01", 1, 10), ("2026-03-02", "2026-03-02", 2, 60)]
    assert series["from"] == "2026-03-01T00:00:00Z"

    async def prompt_tokens(start: str, end: str) -> int:
        response = await get(client, "summary", headers, **{"from": start, "to": end})
        assert response.status_code == 200, response.text
        tokens: int = response.json()["prompt_tokens"]
        return tokens

    # [from, to): a call at `from` is in, a call at `to` is out.
    assert await prompt_tokens("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z") == 60
    assert await prompt_tokens("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z") == 10
    # Offsets are honoured: 01:00 at +01:00 is midnight UTC.
    assert await prompt_tokens("2026-03-02T01:00:00+01:00", "2026-03-02T01:00:01Z") == 20
    assert await prompt_tokens("2026-03-01T23:59:59Z", "2026-03-02T00:00:00Z") == 10


async def test_default_range_is_the_current_month(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await insert_rows(
        runtime,
        [
            ledger_row(tenant, now, prompt_tokens=7),
            ledger_row(tenant, month_start - timedelta(microseconds=1), prompt_tokens=1000),
        ],
    )
    body = (await get(client, "summary", tenant.admin.headers)).json()
    assert body["prompt_tokens"] == 7
    assert datetime.fromisoformat(body["from"]) == month_start
    assert datetime.fromisoformat(body["to"]) > now


async def test_series_by_model_provider_and_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    key_a, key_b = uuid.uuid4(), uuid.uuid4()
    day1 = datetime(2026, 3, 10, 12, tzinfo=UTC)
    day2 = datetime(2026, 3, 11, 12, tzinfo=UTC)
    unpriced = {"model": "mystery-7b", "provider": "lab", "cost_usd": None, "priced": False}
    await insert_rows(
        runtime,
        [
            ledger_row(tenant, day1, api_key_id=key_a, route="default"),
            ledger_row(tenant, day1, api_key_id=key_a, model="gpt-4o"),
            ledger_row(tenant, day2, api_key_id=key_b, model="gpt-4o", cache_hit=True),
            ledger_row(tenant, day2, api_key_id=None, provider="claude", model="claude-sonnet-4"),
            ledger_row(tenant, day2, **unpriced),
        ],
    )
    headers = tenant.admin.headers
    mini, gpt4o, sonnet = (
        catalog.cost_usd(price(m), Usage(1000, 100)) or 0
        for m in ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4")
    )

    by_model = (await get(client, "series", headers, group_by="model", **MARCH)).json()
    assert by_model["group_by"] == "model"
    rows = {r["key"]: r for r in by_model["rows"]}
    assert [r["key"] for r in by_model["rows"]] == [
        "claude-sonnet-4",
        "gpt-4o",
        "gpt-4o-mini",
        "mystery-7b",
    ]
    assert rows["gpt-4o"]["calls"] == 2
    assert rows["gpt-4o"]["cost_usd"] == pytest.approx(2 * gpt4o)
    assert (rows["gpt-4o"]["cache_hits"], rows["gpt-4o"]["cache_hit_rate"]) == (1, 0.5)
    assert rows["gpt-4o"]["day"] is None
    assert (rows["mystery-7b"]["unpriced_calls"], rows["mystery-7b"]["cost_usd"]) == (1, 0)

    by_provider = (await get(client, "series", headers, group_by="provider", **MARCH)).json()
    assert [(r["key"], r["calls"]) for r in by_provider["rows"]] == [
        ("claude", 1),
        ("lab", 1),
        ("oai", 3),
    ]

    by_key = (await get(client, "series", headers, group_by="api_key", **MARCH)).json()
    calls_by_key = {r["key"]: r["calls"] for r in by_key["rows"]}
    assert calls_by_key == {str(key_a): 2, str(key_b): 1, None: 2}
    assert by_key["rows"][-1]["key"] is None  # nulls last

    by_route = (await get(client, "series", headers, group_by="route", **MARCH)).json()
    assert [(r["key"], r["calls"]) for r in by_route["rows"]] == [("default", 1), (None, 4)]

    per_day = (await get(client, "series", headers, group_by="model", bucket="day", **MARCH)).json()
    pairs = [(r["day"], r["key"], r["calls"], r["cost_usd"]) for r in per_day["rows"]]
    assert pairs == [
        ("2026-03-10", "gpt-4o", 1, pytest.approx(gpt4o)),
        ("2026-03-10", "gpt-4o-mini", 1, pytest.approx(mini)),
        ("2026-03-11", "claude-sonnet-4", 1, pytest.approx(sonnet)),
        ("2026-03-11", "gpt-4o", 1, pytest.approx(gpt4o)),
        ("2026-03-11", "mystery-7b", 1, 0),
    ]


async def test_baseline_savings_split_into_cache_and_routing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    at = datetime(2026, 3, 5, tzinfo=UTC)
    mini_cost = 0.15 + 0.60  # 1M prompt and 1M completion tokens on gpt-4o-mini
    await insert_rows(
        runtime,
        [
            ledger_row(tenant, at, prompt_tokens=M, completion_tokens=M),
            # Half the prompt read from the provider's cache: input at the cached price.
            ledger_row(tenant, at, prompt_tokens=M, completion_tokens=0, cached_tokens=M // 2),
            # A gateway cache hit: nothing spent, the first call's cost saved.
            ledger_row(
                tenant,
                at,
                prompt_tokens=M,
                completion_tokens=M,
                cost_usd=0.0,
                cache_hit=True,
                saved_usd=mini_cost,
            ),
            ledger_row(tenant, at, kind="embedding", model="text-embedding-3-small"),
        ],
    )
    body = (await get(client, "summary", tenant.admin.headers, baseline="gpt-4o", **MARCH)).json()
    cached_half = 0.5 * 0.15 + 0.5 * 0.075
    assert body["cost_usd"] == pytest.approx(mini_cost + cached_half + 1000 * 0.02 / M)
    assert (body["cache_hits"], body["cache_hit_rate"]) == (1, 0.25)
    assert body["saved_by_cache_usd"] == pytest.approx(mini_cost)

    baseline = body["baseline"]
    sent_on_gpt4o = (2.50 + 10.00) + (0.5 * 2.50 + 0.5 * 1.25)
    hit_on_gpt4o = 2.50 + 10.00
    assert (baseline["compared_calls"], baseline["excluded_calls"]) == (3, 1)
    assert baseline["cost_usd"] == pytest.approx(sent_on_gpt4o + hit_on_gpt4o)
    assert baseline["actual_cost_usd"] == pytest.approx(mini_cost + cached_half)
    assert baseline["routing_savings_usd"] == pytest.approx(
        sent_on_gpt4o - (mini_cost + cached_half)
    )
    assert baseline["cache_savings_usd"] == pytest.approx(hit_on_gpt4o)
    assert baseline["savings_usd"] == pytest.approx(
        baseline["cost_usd"] - baseline["actual_cost_usd"]
    )

    # The same model as baseline saves nothing by routing; a dearer call costs savings.
    same = (
        await get(client, "summary", tenant.admin.headers, baseline="oai/gpt-4o-mini", **MARCH)
    ).json()["baseline"]
    assert same["routing_savings_usd"] == pytest.approx(0)
    assert same["cache_savings_usd"] == pytest.approx(mini_cost)
    cheaper = (
        await get(client, "summary", tenant.admin.headers, baseline="gpt-4.1-nano", **MARCH)
    ).json()["baseline"]
    assert cheaper["routing_savings_usd"] < 0


async def test_baseline_uses_the_configured_price_override(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        prices={"oai/gpt-4o": PriceConfig(input=100.0, output=100.0)}
    )
    gateway.upstream.script("openai", Reply(usage=(M, 0)))
    await gateway.client().chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    await gateway.ledger()
    async with gateway.http() as http:
        overridden = await get(http, "summary", gateway.tenant.admin.headers, baseline="oai/gpt-4o")
        listed = await get(http, "summary", gateway.tenant.admin.headers, baseline="gpt-4o")
    assert overridden.json()["baseline"]["cost_usd"] == pytest.approx(100.0)
    assert listed.json()["baseline"]["cost_usd"] == pytest.approx(2.50)


# --- validation and permissions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("summary", {"baseline": "no-such-model"}, "baseline"),
        ("summary", {"baseline": "oai/no-such-model"}, "baseline"),
        ("series", {"group_by": "colour"}, "group_by"),
        ("series", {"bucket": "hour"}, "bucket"),
        ("summary", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ("series", {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ("summary", {"from": "2026-03-01T00:00:00"}, "from"),
        ("export.csv", {"to": "tomorrow"}, "to"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(
    client: httpx.AsyncClient, runtime: Runtime, path: str, params: dict[str, str], named: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await get(client, path, tenant.admin.headers, **params)
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]


async def test_usage_read_permission(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    viewer = await make_member(client, tenant, Role.VIEWER)
    for path in ("summary", "series", "export.csv"):
        refused = await get(client, path, viewer.headers)
        assert refused.status_code == 403, path
        assert "usage:read" in refused.json()["detail"]
    for role in (Role.BILLING_ADMIN, Role.DEVELOPER):
        member = await make_member(client, tenant, role)
        assert (await get(client, "summary", member.headers)).status_code == 200


# --- CSV export ---------------------------------------------------------------------------


async def test_export_streams_every_row_of_the_tenant_and_no_other(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    other = await make_tenant(runtime, client, "other-co")
    at = datetime(2026, 3, 7, 9, tzinfo=UTC)
    # 2,500 rows over three instants, so chunks of 1,000 break inside runs of equal times.
    rows = [ledger_row(tenant, at + timedelta(seconds=i % 3)) for i in range(2500)]
    rows.append(ledger_row(tenant, at, requested_model='=HYPERLINK("http://x")'))
    rows.append(ledger_row(tenant, datetime(2026, 4, 1, tzinfo=UTC)))  # outside the range
    theirs = [ledger_row(other, at) for _ in range(5)]
    await insert_rows(runtime, rows + theirs)

    response = await get(client, "export.csv", tenant.admin.headers, **MARCH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert (
        disposition == 'attachment; filename="apiary-usage-20260301T000000Z-20260401T000000Z.csv"'
    )
    header = response.text.splitlines()[0].split(",")
    assert header[:4] == ["created_at", "id", "kind", "status"]
    assert {"cost_usd", "prompt_tokens", "cache_hit", "api_key_id"} <= set(header)

    exported = csv_lines(response)
    assert len(exported) == 2501
    ids = [line["id"] for line in exported]
    assert len(set(ids)) == 2501
    assert set(ids) == {str(row["id"]) for row in rows[:2501]}
    assert not {str(row["id"]) for row in theirs} & set(ids)
    assert [line["created_at"] for line in exported] == sorted(
        line["created_at"] for line in exported
    )
    assert "'=HYPERLINK" in response.text  # a formula is quoted, not run by a spreadsheet
    first = next(line for line in exported if line["requested_model"] == "gpt-4o-mini")
    assert float(first["cost_usd"]) == pytest.approx(rows[0]["cost_usd"])
