"""Invitations: an account that already exists joins a tenant only by accepting, signed in as
itself; the super admin is never a member; a tenant never sees another's sign-in failures."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.bootstrap import ensure_super_admin
from apiary.runtime import Runtime
from tests.factories import PASSWORD, Caller, TenantFixture, login, make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def _invite(
    client: httpx.AsyncClient, tenant: TenantFixture, email: str, role: str = "viewer"
) -> httpx.Response:
    return await client.post(
        "/api/v1/members/invitations",
        headers=tenant.admin.headers,
        json={"email": email, "role": role},
    )


async def _actions(client: httpx.AsyncClient, caller: Caller, action: str) -> list[dict[str, str]]:
    log = await client.get("/api/v1/audit-log", params={"action": action}, headers=caller.headers)
    assert log.status_code == 200, log.text
    items: list[dict[str, str]] = log.json()["items"]
    return items


async def test_an_existing_account_joins_only_when_it_accepts(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    enrolled = await client.post(
        "/api/v1/members",
        headers=globex.admin.headers,
        json={"email": "admin@acme.example", "role": "viewer"},
    )
    assert enrolled.status_code == 409
    assert "/api/v1/members/invitations" in enrolled.json()["detail"]

    invited = await _invite(client, globex, "admin@acme.example")
    assert invited.status_code == 201, invited.text
    assert invited.json()["email"] == "admin@acme.example"
    pending = (await client.get("/api/v1/members/invitations", headers=globex.admin.headers)).json()
    assert [i["email"] for i in pending["items"]] == ["admin@acme.example"]
    # Until it accepts, the account is nothing of globex's: not a member, no sign-in there.
    members = (await client.get("/api/v1/members", headers=globex.admin.headers)).json()
    assert [m["email"] for m in members["items"]] == ["admin@globex.example"]
    refused = await client.post(
        "/api/v1/auth/login",
        json={"email": "admin@acme.example", "password": PASSWORD, "tenant": "globex"},
    )
    assert refused.status_code == 403

    invitee = await login(client, "admin@acme.example")
    assert invitee.tenant_id == acme.id
    [received] = (await client.get("/api/v1/invitations", headers=invitee.headers)).json()
    assert received["tenant_name"] == "globex"
    assert received["role"] == "viewer"
    assert received["invited_by_email"] == "admin@globex.example"
    accepted = await client.post(
        f"/api/v1/invitations/{received['id']}/accept", headers=invitee.headers
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["tenant_id"] == globex.id

    into_globex = await login(client, "admin@acme.example", tenant="globex")
    me = (await client.get("/api/v1/auth/me", headers=into_globex.headers)).json()
    assert me["role"] == "viewer"
    assert {m["tenant_name"] for m in me["memberships"]} == {"acme", "globex"}
    # Its first tenant stays where it lands by default.
    assert (await login(client, "admin@acme.example")).tenant_id == acme.id
    assert (await client.get("/api/v1/invitations", headers=invitee.headers)).json() == []
    left = await client.get("/api/v1/members/invitations", headers=globex.admin.headers)
    assert left.json()["total"] == 0
    [joined] = await _actions(client, globex.admin, "member.joined")
    assert joined["actor_user_id"] == invitee.user_id


async def test_the_super_admin_is_never_enrollable(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    created = await ensure_super_admin(runtime)
    assert created is not None
    root_email, root_password = created
    for path in ("/api/v1/members", "/api/v1/members/invitations"):
        response = await client.post(
            path, headers=acme.admin.headers, json={"email": root_email, "role": "viewer"}
        )
        assert response.status_code == 403, path
        assert response.json()["error"] == "Forbidden"
        assert "super admin" in response.json()["detail"]
    root = await login(client, root_email, root_password)
    assert root.tenant_id is None  # its sign-in lands in no tenant
    assert (await client.get("/api/v1/auth/me", headers=root.headers)).json()["memberships"] == []
    # Not even the platform itself makes it a tenant's admin.
    tenant = await client.post(
        "/api/v1/tenants",
        headers=root.headers,
        json={"name": "rooted", "admin_email": root_email},
    )
    assert tenant.status_code == 403
    assert "super admin" in tenant.json()["detail"]


async def test_declined_and_cancelled_invitations_leave_no_membership(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    invitee = await login(client, "admin@acme.example")
    invitation = (await _invite(client, globex, "admin@acme.example", "developer")).json()
    declined = await client.post(
        f"/api/v1/invitations/{invitation['id']}/decline", headers=invitee.headers
    )
    assert declined.status_code == 204
    late = await client.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=invitee.headers
    )
    assert late.status_code == 404
    [entry] = await _actions(client, globex.admin, "member.invitation_declined")
    # The person by reference (their id), never by address: an erasure leaves the log
    # naming an anonymous account, without rewriting it.
    assert entry["target_id"] == invitee.user_id
    assert "email" not in entry["details"]

    again = (await _invite(client, globex, "admin@acme.example")).json()
    cancelled = await client.delete(
        f"/api/v1/members/invitations/{again['id']}", headers=globex.admin.headers
    )
    assert cancelled.status_code == 204
    assert (await client.get("/api/v1/invitations", headers=invitee.headers)).json() == []
    gone = await client.post(f"/api/v1/invitations/{again['id']}/accept", headers=invitee.headers)
    assert gone.status_code == 404
    me = (await client.get("/api/v1/auth/me", headers=invitee.headers)).json()
    assert [m["tenant_name"] for m in me["memberships"]] == ["acme"]


async def test_only_the_invited_account_answers_its_invitation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    invitation = (await _invite(client, globex, "admin@acme.example")).json()
    # globex's own admin (or anyone else) cannot accept it on the invitee's behalf ...
    hijack = await client.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=globex.admin.headers
    )
    assert hijack.status_code == 404
    # ... nor can a key of the invitee's own tenant: joining is the person's decision.
    key = await client.post(
        "/api/v1/api-keys", headers=acme.admin.headers, json={"name": "k", "role": "viewer"}
    )
    key_headers = {"Authorization": f"Bearer {key.json()['key']}"}
    by_key = await client.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=key_headers
    )
    assert by_key.status_code == 403
    assert "sign in as a user" in by_key.json()["detail"]
    assert (await client.get("/api/v1/invitations", headers=key_headers)).status_code == 403
    members = (await client.get("/api/v1/members", headers=globex.admin.headers)).json()
    assert members["total"] == 1


async def test_inviting_nobody_or_a_member_is_a_clear_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    nobody = await _invite(client, acme, "nobody@nowhere.example")
    assert nobody.status_code == 404
    assert "POST /api/v1/members" in nobody.json()["detail"]
    member = await _invite(client, acme, "admin@acme.example")
    assert member.status_code == 409
    assert "already a member" in member.json()["detail"]


async def test_failed_sign_ins_stay_in_the_tenant_they_were_aimed_at(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    invitee = await login(client, "admin@acme.example")
    invitation = (await _invite(client, globex, "admin@acme.example")).json()
    accepted = await client.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=invitee.headers
    )
    assert accepted.status_code == 200
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": "admin@acme.example", "password": "wrong-wrong"}
    )
    assert wrong.status_code == 401
    [seen] = await _actions(client, acme.admin, "auth.login_failed")
    assert seen["ip"] == "10.9.8.7"
    # The tenant it joined later sees none of the sign-ins it did not aim at.
    assert await _actions(client, globex.admin, "auth.login_failed") == []


async def test_an_account_in_no_tenant_signs_in_only_to_answer_its_invitations(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    globex = await make_tenant(runtime, client, "globex")
    pat = await make_member(client, acme, Role.DEVELOPER, email="pat@acme.example")
    removed = await client.delete(
        f"/api/v1/members/{pat.extra['membership_id']}", headers=acme.admin.headers
    )
    assert removed.status_code == 204
    nowhere = await client.post(
        "/api/v1/auth/login", json={"email": "pat@acme.example", "password": PASSWORD}
    )
    assert nowhere.status_code == 403  # no tenant and nothing to answer: no sign-in
    assert (await _invite(client, globex, "pat@acme.example")).status_code == 201

    invitee = await login(client, "pat@acme.example")
    assert invitee.tenant_id is None
    me = (await client.get("/api/v1/auth/me", headers=invitee.headers)).json()
    assert sorted(me["permissions"]) == ["invitations:respond", "self"]
    for path in ("/api/v1/members", "/api/v1/providers/health", "/api/v1/agents"):
        refused = await client.get(path, headers=invitee.headers)
        assert refused.status_code == 403, path
        assert "signed in to no tenant" in refused.json()["detail"]
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": invitee.refresh_token}
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["tenant_id"] is None

    [received] = (await client.get("/api/v1/invitations", headers=invitee.headers)).json()
    accepted = await client.post(
        f"/api/v1/invitations/{received['id']}/accept", headers=invitee.headers
    )
    assert accepted.status_code == 200
    assert (await login(client, "pat@acme.example")).tenant_id == globex.id
