"""Exporting a tenant's or a person's data: a zip with JSON Lines per table, the conversation
memory and the original uploads, no secrets, nothing of another tenant."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import orjson
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.crypto.conftest import local, new_key
from tests.factories import PASSWORD, Caller, login, make_member, make_super_admin, make_tenant
from tests.gateway.conftest import GatewayFactory
from tests.knowledge.helpers import create_base, upload
from tests.swarm.conftest import build_swarm

pytestmark = pytest.mark.both_databases

MANUAL = b"# Pump manual\n\nPrime the pump before the first start. Never run it dry.\n"


def _lines(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in archive.read(name).splitlines() if line.strip()]


async def _download(client: httpx.AsyncClient, url: str, caller: Caller) -> zipfile.ZipFile:
    response = await client.get(url, headers=caller.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return zipfile.ZipFile(io.BytesIO(response.content))


async def test_a_tenant_admin_exports_the_whole_tenant(
    make_gateway: GatewayFactory, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    swarm = await build_swarm(make_gateway)
    tenant, http = swarm.gateway.tenant, swarm.http
    started = await swarm.start(
        "Plan a trip to Lisbon", thread_id="t-1", options={"mode": "single"}
    )
    assert (await swarm.wait(started["id"]))["state"] == "succeeded"
    kb = await create_base(http, tenant.admin)
    document = await upload(http, tenant.admin, kb["id"], "../pump manual.md", MANUAL)
    await swarm.gateway.runtime.ingestion.join()
    other = await make_tenant(runtime, client, "other")
    other_kb = await create_base(client, other.admin, "secret-plans")

    archive = await _download(http, f"/api/v1/privacy/tenants/{tenant.id}/export", tenant.admin)
    names = set(archive.namelist())
    manifest = orjson.loads(archive.read("manifest.json"))
    assert manifest["kind"] == "tenant"
    assert manifest["tenant_id"] == tenant.id
    assert {"tenant.json", "members.jsonl", "memory/threads.jsonl"} <= names
    agents = _lines(archive, "tables/agents.jsonl")
    assert [a["id"] for a in agents] == [swarm.agent_id]
    executions = _lines(archive, "tables/executions.jsonl")
    assert [e["task"] for e in executions] == ["Plan a trip to Lisbon"]
    [thread] = _lines(archive, "memory/threads.jsonl")
    assert thread["thread_id"] == "t-1"
    assert [t["task"] for t in thread["turns"]] == ["Plan a trip to Lisbon"]
    # The original upload, byte for byte, under a name that cannot escape the folder.
    assert archive.read(f"documents/{document['id']}/pump manual.md") == MANUAL
    assert manifest["files"]["tables/knowledge_documents.jsonl"] == 1
    # No secrets, no other tenant, and every table's rows are the tenant's.
    everything = b"".join(archive.read(name) for name in names)
    for secret in (b"password_hash", b"key_hash", b"token_hash", b'"secret"'):
        assert secret not in everything
    assert other.id.encode() not in everything
    assert other_kb["id"].encode() not in everything
    for name in names:
        if name.startswith("tables/"):
            assert all(row["tenant_id"] == tenant.id for row in _lines(archive, name)), name

    # Another tenant's admin sees no such tenant; a viewer may not export; the platform may.
    hidden = await http.get(
        f"/api/v1/privacy/tenants/{tenant.id}/export", headers=other.admin.headers
    )
    assert hidden.status_code == 404
    assert hidden.json() == {"error": "NotFound", "detail": f"tenant {tenant.id} not found"}
    viewer = await make_member(client, tenant, Role.VIEWER)
    refused = await http.get(f"/api/v1/privacy/tenants/{tenant.id}/export", headers=viewer.headers)
    assert refused.status_code == 403
    root = await make_super_admin(runtime, client)
    assert (await _download(http, f"/api/v1/privacy/tenants/{tenant.id}/export", root)).namelist()
    log = await client.get(
        "/api/v1/audit-log", params={"action": "tenant.exported"}, headers=tenant.admin.headers
    )
    assert log.json()["total"] == 2


async def test_a_person_exports_their_own_data_across_their_tenants(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    added = await client.post(
        "/api/v1/members",
        headers=acme.admin.headers,
        json={
            "email": "grace@acme.example",
            "name": "Grace",
            "role": "developer",
            "password": PASSWORD,
        },
    )
    assert added.status_code == 201, added.text
    grace = await login(client, "grace@acme.example")
    kb = await create_base(client, grace)
    mine = await upload(client, grace, kb["id"], "mine.md", MANUAL)
    theirs = await upload(client, acme.admin, kb["id"], "theirs.md", b"# Not Grace's\n")
    await runtime.ingestion.join()
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=globex.admin.headers,
        json={"email": "grace@acme.example", "role": "viewer"},
    )
    accepted = await client.post(
        f"/api/v1/invitations/{invited.json()['id']}/accept", headers=grace.headers
    )
    assert accepted.status_code == 200, accepted.text

    await login(client, "grace@acme.example", tenant="globex")  # a sign-in into globex
    url = f"/api/v1/privacy/users/{grace.user_id}/export"
    archive = await _download(client, url, grace)
    assert len(archive.namelist()) == len(set(archive.namelist()))
    profile = orjson.loads(archive.read("user.json"))
    assert (profile["email"], profile["name"]) == ("grace@acme.example", "Grace")
    assert "password_hash" not in profile
    memberships = orjson.loads(archive.read("memberships.json"))
    assert {m["tenant_id"] for m in memberships} == {acme.id, globex.id}
    sessions = _lines(archive, "tables/auth_sessions.jsonl")  # their sign-ins, everywhere
    assert {s["tenant_id"] for s in sessions} == {acme.id, globex.id}
    assert archive.read(f"documents/{mine['id']}/mine.md") == MANUAL
    assert not any(theirs["id"] in name for name in archive.namelist())
    bases = _lines(archive, "tables/knowledge_bases.jsonl")
    assert [b["id"] for b in bases] == [kb["id"]]

    # Their tenant's admin exports what the tenant holds of them; another tenant's cannot
    # reach what acme holds, and an outsider sees no such person.
    by_admin = await _download(client, url, acme.admin)
    assert orjson.loads(by_admin.read("manifest.json"))["tenants"] == [acme.id]
    seen = _lines(by_admin, "tables/auth_sessions.jsonl")
    assert seen
    assert {s["tenant_id"] for s in seen} == {acme.id}  # not the sign-ins into globex
    assert globex.id.encode() not in b"".join(by_admin.read(n) for n in by_admin.namelist())
    outsider = await make_tenant(runtime, client, "initech")
    hidden = await client.get(url, headers=outsider.admin.headers)
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == f"user {grace.user_id} not found"


async def test_an_export_holds_the_original_bytes_of_documents_stored_encrypted(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    # With a KEK configured uploads are ciphertext in the database (apiary/crypto); the
    # person asking for their data gets what they uploaded, not the ciphertext.
    runtime.encryption.keks = local(k1=new_key())
    try:
        tenant = await make_tenant(runtime, client, "sealed")
        kb = await create_base(client, tenant.admin)
        document = await upload(client, tenant.admin, kb["id"], "manual.md", MANUAL)
        archive = await _download(
            client, f"/api/v1/privacy/tenants/{tenant.id}/export", tenant.admin
        )
        [name] = [n for n in archive.namelist() if n.startswith(f"documents/{document['id']}/")]
        assert archive.read(name) == MANUAL
    finally:
        runtime.encryption.keks = None
        runtime.encryption.forget()
