"""Input a hostile or careless client sends to /api/v1: integers past 64 bits, nulls where a
value is required, control and invisible characters in names. Each gets a 422 that names
the field, and nothing stored changes (issue 14, items 1, 3 and 12)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from sqlalchemy import func, select

from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from tests.factories import Caller, TenantFixture, make_super_admin, make_tenant

pytestmark = pytest.mark.both_databases

HUGE = 99999999999999999999  # past 2**64
INT64_MAX = 2**63 - 1  # the widest a BIGINT column, SQLite and orjson take

LISTS = [
    "/api/v1/members",
    "/api/v1/api-keys",
    "/api/v1/audit-log",
    "/api/v1/knowledge-bases",
    "/api/v1/agents",
    "/api/v1/executions",
]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.fixture
async def acme(runtime: Runtime, client: httpx.AsyncClient) -> TenantFixture:
    return await make_tenant(runtime, client, "acme-hostile")


@pytest.fixture
async def super_admin(runtime: Runtime, client: httpx.AsyncClient) -> Caller:
    return await make_super_admin(runtime, client)


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert field in body["detail"], body


async def _agent(client: httpx.AsyncClient, acme: TenantFixture) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/agents", headers=acme.admin.headers, json={"name": "analyst", "tools": []}
    )
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


@pytest.mark.parametrize("path", LISTS)
async def test_an_offset_past_64_bits_is_refused_by_name(
    client: httpx.AsyncClient, acme: TenantFixture, path: str
) -> None:
    _refused(await client.get(path, headers=acme.admin.headers, params={"offset": HUGE}), "offset")
    # The largest one the database takes is an empty page, not an error.
    widest = await client.get(path, headers=acme.admin.headers, params={"offset": INT64_MAX})
    assert widest.status_code == 200, widest.text
    assert widest.json()["items"] == []


@pytest.mark.parametrize("rpm", [HUGE, 2**31])  # limits are INTEGER columns
async def test_a_limit_past_its_column_is_refused_and_the_limits_stay(
    client: httpx.AsyncClient, acme: TenantFixture, rpm: int
) -> None:
    set_ok = await client.patch("/api/v1/limits", headers=acme.admin.headers, json={"key_rpm": 7})
    assert set_ok.status_code == 200, set_ok.text
    _refused(
        await client.patch("/api/v1/limits", headers=acme.admin.headers, json={"key_rpm": rpm}),
        "key_rpm",
    )
    after = await client.get("/api/v1/limits", headers=acme.admin.headers)
    assert after.json()["key_rpm"] == 7


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"a": HUGE}, "64 bits"),
        ({"a": [1, {"b": -HUGE}]}, "a[1].b"),
        (_nested(40), "deeper than 32"),
        ({"text": "nul\x00byte"}, "NUL"),
    ],
    ids=["huge-int", "huge-negative-nested", "deep", "nul"],
)
async def test_execution_inputs_the_store_cannot_keep_are_refused(
    client: httpx.AsyncClient, acme: TenantFixture, inputs: dict[str, Any], named: str
) -> None:
    agent = await _agent(client, acme)
    response = await client.post(
        "/api/v1/executions",
        headers=acme.admin.headers,
        json={"agent_id": agent["id"], "task": "summarise", "inputs": inputs},
    )
    _refused(response, named)
    listed = await client.get("/api/v1/executions", headers=acme.admin.headers)
    assert listed.json()["total"] == 0


@pytest.mark.parametrize("after", [HUGE, 2**31])  # sequence numbers are INTEGER columns
async def test_an_events_resume_point_past_its_column_is_refused_before_the_stream(
    client: httpx.AsyncClient, acme: TenantFixture, after: int
) -> None:
    execution_id = uuid.uuid4()
    response = await client.get(
        f"/api/v1/executions/{execution_id}/events",
        headers=acme.admin.headers,
        params={"after": after},
    )
    _refused(response, "after")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": None}, "tools may not be null"),
        ({"name": None}, "name may not be null"),
        ({"temperature": None, "tools": None}, "temperature, tools may not be null"),
    ],
)
async def test_patching_an_agent_with_null_is_refused_by_name(
    client: httpx.AsyncClient, acme: TenantFixture, change: dict[str, Any], named: str
) -> None:
    agent = await _agent(client, acme)
    response = await client.patch(
        f"/api/v1/agents/{agent['id']}", headers=acme.admin.headers, json=change
    )
    _refused(response, named)
    kept = await client.get(f"/api/v1/agents/{agent['id']}", headers=acme.admin.headers)
    assert kept.json()["version"] == agent["version"]
    assert kept.json()["tools"] == []


async def test_null_still_clears_what_may_be_cleared(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    agent = await _agent(client, acme)
    path = f"/api/v1/agents/{agent['id']}"
    capped = await client.patch(path, headers=acme.admin.headers, json={"max_cost_usd": 2.5})
    assert capped.json()["max_cost_usd"] == 2.5
    cleared = await client.patch(path, headers=acme.admin.headers, json={"max_cost_usd": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["max_cost_usd"] is None


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("acme\x00corp", "U+0000"),
        ("acme\ncorp", "U+000A"),
        ("admin\u200bcorp", "U+200B"),  # zero-width space: looks like "admincorp"
        ("\u202eprocorp", "U+202E"),  # right-to-left override: reads as "procorp" reversed
    ],
    ids=["nul", "newline", "zero-width", "rtl-override"],
)
async def test_tenant_names_with_control_or_invisible_characters_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, super_admin: Caller, name: str, named: str
) -> None:
    response = await client.post(
        "/api/v1/tenants", headers=super_admin.headers, json={"name": name}
    )
    _refused(response, named)
    async with runtime.session_factory() as session:
        count = await session.scalar(select(func.count()).select_from(Tenant))
    assert count == 0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"email": "a\x00b@acme.io", "role": "viewer"}, "U+0000"),
        ({"email": "ab@acme.io", "role": "viewer", "name": "Ann\x07"}, "U+0007"),
        ({"email": "ab@acme.io", "role": "viewer", "name": "Ann\u2066ie"}, "U+2066"),
    ],
)
async def test_members_with_control_characters_are_refused(
    client: httpx.AsyncClient, acme: TenantFixture, body: dict[str, str], named: str
) -> None:
    _refused(await client.post("/api/v1/members", headers=acme.admin.headers, json=body), named)


async def test_a_task_with_a_nul_is_refused(client: httpx.AsyncClient, acme: TenantFixture) -> None:
    agent = await _agent(client, acme)
    response = await client.post(
        "/api/v1/executions",
        headers=acme.admin.headers,
        json={"agent_id": agent["id"], "task": "sum\x00marise"},
    )
    _refused(response, "NUL")


async def _close_code(http: httpx.AsyncClient, url: str) -> int:
    """The code a socket to `url` closes with (httpx-ws raises it inside a task group)."""
    socket: AsyncWebSocketSession
    with pytest.raises(BaseException) as raised:  # noqa: PT011 - unwrapped below
        async with aconnect_ws(url, http) as socket:
            await socket.receive_text()
    error = raised.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, WebSocketDisconnect), error
    return error.code


async def test_a_socket_to_a_foreign_execution_closes_with_4404(
    served_url: str, acme: TenantFixture
) -> None:
    # Through a real server: closing before the accept would be an HTTP 403 at the
    # handshake, which a browser's WebSocket cannot tell from a missing token.
    url = f"{served_url.replace('http', 'ws', 1)}/api/v1/executions/{uuid.uuid4()}/ws"
    async with httpx.AsyncClient() as http:
        assert await _close_code(http, f"{url}?token={acme.admin.token}") == 4404
        assert await _close_code(http, url) == 4403
