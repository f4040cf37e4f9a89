"""Agents over the API: validation names the field, every change is a version, tenants
never see each other's agents, viewers read and developers write."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def test_create_update_and_versions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client)
    headers = tenant.admin.headers
    created = await client.post(
        "/api/v1/agents",
        headers=headers,
        json={"name": "researcher", "system_prompt": "Be brief.", "tools": ["calculator"]},
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["version"] == 1
    assert agent["max_subagents"] == 5

    updated = await client.patch(
        f"/api/v1/agents/{agent['id']}",
        headers=headers,
        json={"system_prompt": "Be thorough.", "max_subagents": 20},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    # The same values again are not a change, and make no version.
    same = await client.patch(
        f"/api/v1/agents/{agent['id']}", headers=headers, json={"max_subagents": 20}
    )
    assert same.json()["version"] == 2

    versions = (await client.get(f"/api/v1/agents/{agent['id']}/versions", headers=headers)).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert versions["items"][1]["definition"]["system_prompt"] == "Be brief."
    assert versions["items"][0]["definition"]["system_prompt"] == "Be thorough."

    listed = (await client.get("/api/v1/agents", headers=headers)).json()
    assert [a["name"] for a in listed["items"]] == ["researcher"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "max_subagents": 0}, "max_subagents"),
        ({"name": "a", "max_subagents": 101}, "max_subagents"),
        ({"name": "a", "temperature": 3}, "temperature"),
        ({"name": "a", "tools": ["rm_rf"]}, "tools"),
        ({"name": "a", "model": "no-such-model"}, "model"),
        ({"name": ""}, "name"),
        ({"name": "a", "tenant_id": "x"}, "tenant_id"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, object], field: str
) -> None:
    tenant = await make_tenant(runtime, client)
    response = await client.post("/api/v1/agents", headers=tenant.admin.headers, json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


async def test_duplicate_name_conflicts(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client)
    first = await client.post("/api/v1/agents", headers=tenant.admin.headers, json={"name": "x"})
    assert first.status_code == 201
    second = await client.post("/api/v1/agents", headers=tenant.admin.headers, json={"name": "x"})
    assert second.status_code == 409


async def test_roles_and_tenants(client: httpx.AsyncClient, runtime: Runtime) -> None:
    a = await make_tenant(runtime, client, "agents-a")
    b = await make_tenant(runtime, client, "agents-b")
    viewer = await make_member(client, a, Role.VIEWER)
    developer = await make_member(client, a, Role.DEVELOPER)
    refused = await client.post("/api/v1/agents", headers=viewer.headers, json={"name": "v"})
    assert refused.status_code == 403
    made = await client.post("/api/v1/agents", headers=developer.headers, json={"name": "d"})
    assert made.status_code == 201
    agent_id = made.json()["id"]
    assert (
        await client.get(f"/api/v1/agents/{agent_id}", headers=viewer.headers)
    ).status_code == 200

    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method,
            f"/api/v1/agents/{agent_id}",
            headers=b.admin.headers,
            json={"description": "mine now"} if method == "PATCH" else None,
        )
        assert response.status_code == 404, (method, response.text)
    assert (await client.get("/api/v1/agents", headers=b.admin.headers)).json()["total"] == 0

    deleted = await client.delete(f"/api/v1/agents/{agent_id}", headers=developer.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/agents/{agent_id}", headers=viewer.headers)
    assert gone.status_code == 404


async def test_the_tools_an_agent_may_be_given_are_listed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "agents-tools")
    viewer = await make_member(client, tenant, Role.VIEWER)
    response = await client.get("/api/v1/agents/tools", headers=viewer.headers)
    assert response.status_code == 200, response.text
    tools = {tool["name"]: tool["description"] for tool in response.json()}
    assert set(tools) == {"calculator", "knowledge_search", "memory"}
    assert "arithmetic" in tools["calculator"].lower()
    # Each one is accepted in an agent; a name not listed is refused, naming the field.
    made = await client.post(
        "/api/v1/agents", headers=tenant.admin.headers, json={"name": "t", "tools": ["memory"]}
    )
    assert made.status_code == 201, made.text
    refused = await client.post(
        "/api/v1/agents", headers=tenant.admin.headers, json={"name": "u", "tools": ["shell"]}
    )
    assert refused.status_code == 422
    assert "tools" in refused.json()["detail"]
    assert (await client.get("/api/v1/agents/tools")).status_code == 401
