"""Erasing a person: their address, name, password and sign-ins are gone, their keys revoked;
what names them keeps only their id, whose account is now anonymous; the audit log is not
rewritten and `apiary audit verify` still passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from apiary.authz.permissions import Role
from apiary.config import Settings
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.factories import (
    PASSWORD,
    Caller,
    TenantFixture,
    login,
    make_api_key,
    make_member,
    make_super_admin,
    make_tenant,
)
from tests.knowledge.helpers import create_base, upload
from tests.privacy.leftovers import keys_naming, rows_naming

pytestmark = pytest.mark.both_databases

APIARY_BIN = Path(sys.executable).parent / "apiary"
# Tables where an erased person's id may stay: their anonymous row, the log, and the
# tenant's own records of what they made (which name them by that id only).
BY_REFERENCE = {"users", "audit_entries", "api_keys", "knowledge_bases", "knowledge_documents"}


async def _erase(client: httpx.AsyncClient, caller: Caller, user_id: str | None) -> httpx.Response:
    return await client.post(f"/api/v1/privacy/users/{user_id}/erasure", headers=caller.headers)


def _audit_verify_cli(settings: Settings, tmp_path: Path) -> dict[str, object]:
    """`apiary audit verify`, the command an auditor runs, on the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(tmp_path)
    env["APIARY_DATABASE_URL"] = settings.sqlalchemy_url
    result = subprocess.run(
        [str(APIARY_BIN), "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, object] = orjson.loads(result.stdout)
    return report


async def test_a_person_erases_themselves_and_nothing_names_them_but_their_id(
    runtime: Runtime, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    added = await client.post(
        "/api/v1/members",
        headers=acme.admin.headers,
        json={
            "email": "ada.lovelace@acme.example",
            "name": "Ada Lovelace",
            "role": "developer",
            "password": PASSWORD,
        },
    )
    assert added.status_code == 201, added.text
    mistyped = await client.post(
        "/api/v1/auth/login", json={"email": "ada.lovelace@acme.example", "password": "oops"}
    )
    assert mistyped.status_code == 401  # audited, and naming her only by id
    dev = await login(client, "ada.lovelace@acme.example")
    key = await client.post(
        "/api/v1/api-keys", headers=dev.headers, json={"name": "laptop", "role": "developer"}
    )
    assert key.status_code == 201, key.text
    kb = await create_base(client, dev)
    await upload(client, dev, kb["id"], "notes.md", b"# Notes\n\nAda's notes on the engine.\n")
    await runtime.ingestion.join()

    response = await _erase(client, dev, dev.user_id)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["already_erased"] is False
    assert report["memberships_removed"] == 1
    assert report["sessions_ended"] >= 1
    assert report["refresh_tokens_removed"] >= 1
    assert report["api_keys_revoked"] == 1
    assert report["audit_entries_kept"] >= 2  # added as a member, erased

    # Their address and name are in no table and no Redis key; their id only by reference.
    assert await rows_naming(runtime, "ada.lovelace@acme.example") == {}
    assert await rows_naming(runtime, "Ada Lovelace") == {}
    if TEST_REDIS:
        redis = Redis.from_url(TEST_REDIS)
        assert await keys_naming(redis, "ada.lovelace@acme.example") == []
        await redis.aclose()
    assert dev.user_id is not None
    found = await rows_naming(runtime, dev.user_id)
    assert set(found) <= BY_REFERENCE, set(found)
    [row] = found["users"]
    assert row["email"].endswith("@erased.invalid")
    assert row["name"] == ""
    assert row["password_hash"] is None
    assert row["is_active"] is False
    assert all(k["revoked_at"] is not None for k in found["api_keys"])

    # The log still verifies, and still shows what happened to that (now anonymous) id.
    assert _audit_verify_cli(settings, tmp_path)["ok"] is True
    log = await client.get("/api/v1/audit-log", headers=acme.admin.headers)
    erased = [e for e in log.json()["items"] if e["action"] == "user.erased"]
    assert [e["target_id"] for e in erased] == [dev.user_id]
    joined = [e for e in log.json()["items"] if e["action"] == "member.added"]
    assert dev.user_id in {e["target_id"] for e in joined}

    # Their sign-in, their refresh token and their key stop working at once.
    assert (await client.get("/api/v1/auth/me", headers=dev.headers)).status_code == 401
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": dev.refresh_token})
    assert refreshed.status_code == 401
    by_key = await client.get(
        "/api/v1/agents", headers={"Authorization": f"Bearer {key.json()['key']}"}
    )
    assert by_key.status_code == 401
    signed_in = await client.post(
        "/api/v1/auth/login", json={"email": "ada.lovelace@acme.example", "password": PASSWORD}
    )
    assert signed_in.status_code == 401
    members = await client.get("/api/v1/members", headers=acme.admin.headers)
    assert dev.user_id not in {m["user_id"] for m in members.json()["items"]}

    # Erasing again changes nothing and says so.
    root = await make_super_admin(runtime, client)
    again = await _erase(client, root, dev.user_id)
    assert again.status_code == 200
    assert again.json()["already_erased"] is True


async def test_a_tenant_admin_erases_a_member_of_their_tenant_only(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    viewer = await make_member(client, acme, Role.VIEWER)
    outsider = await make_member(client, globex, Role.VIEWER)

    hidden = await _erase(client, acme.admin, outsider.user_id)
    assert hidden.status_code == 404
    assert hidden.json() == {"error": "NotFound", "detail": f"user {outsider.user_id} not found"}
    by_viewer = await _erase(client, viewer, acme.admin.user_id)
    assert by_viewer.status_code == 404

    done = await _erase(client, acme.admin, viewer.user_id)
    assert done.status_code == 200, done.text
    assert (await client.get("/api/v1/auth/me", headers=viewer.headers)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=outsider.headers)).status_code == 200


async def test_erasure_refuses_what_would_strand_a_tenant_or_the_platform(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    await make_member(client, acme, Role.VIEWER)
    root = await make_super_admin(runtime, client)

    last_admin = await _erase(client, acme.admin, acme.admin.user_id)
    assert last_admin.status_code == 409
    assert "last tenant_admin of tenant 'acme'" in last_admin.json()["detail"]
    only_member = await _erase(client, globex.admin, globex.admin.user_id)
    assert only_member.status_code == 409
    assert "only member of tenant 'globex'" in only_member.json()["detail"]

    platform = await _erase(client, root, root.user_id)
    assert platform.status_code == 403
    assert "super admin account cannot be erased" in platform.json()["detail"]

    unknown = await client.post(
        "/api/v1/privacy/users/00000000-0000-4000-8000-000000000000/erasure",
        headers=root.headers,
    )
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "user 00000000-0000-4000-8000-000000000000 not found"

    key = await make_api_key(runtime, acme, Role.TENANT_ADMIN)
    by_key = await _erase(client, key, acme.admin.user_id)
    assert by_key.status_code == 403
    assert "not an API key" in by_key.json()["detail"]

    shared = await _member_of_both(client, acme, globex)
    both = await _erase(client, acme.admin, shared.user_id)
    assert both.status_code == 409
    assert "also a member of other tenants" in both.json()["detail"]
    # Nothing was changed by the refusals.
    assert (await client.get("/api/v1/auth/me", headers=acme.admin.headers)).status_code == 200


async def _member_of_both(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> Caller:
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=acme.admin.headers,
        json={"email": globex.admin.email, "role": "viewer"},
    )
    assert invited.status_code == 201, invited.text
    accepted = await client.post(
        f"/api/v1/invitations/{invited.json()['id']}/accept", headers=globex.admin.headers
    )
    assert accepted.status_code == 200, accepted.text
    return globex.admin
