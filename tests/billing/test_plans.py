"""Plans as data: the shipped defaults, the super admin's edits (kept across restarts),
archiving, a plan edit that would leave tenants over it, and moving a tenant between plans."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from apiary.authz.permissions import Role
from apiary.billing.defaults import load_default_plans
from apiary.billing.models import Plan
from apiary.runtime import Runtime
from tests.factories import make_member, make_super_admin, make_tenant


async def test_the_shipped_plans_are_loaded(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    response = await client.get("/api/v1/admin/plans", headers=root.headers)
    assert response.status_code == 200, response.text
    plans = {plan["key"]: plan for plan in response.json()}
    assert list(plans) == ["enterprise", "free", "team", "premium"]  # by fee, then key
    assert plans["premium"]["monthly_fee_usd"] == "249.00"
    assert plans["premium"]["name"] == "Premium"
    assert plans["free"]["seats"] == 3
    assert plans["free"]["overage"] is False
    assert plans["enterprise"]["seats"] is None  # unlimited
    assert plans["premium"]["oidc"]
    assert not plans["free"]["oidc"]


async def test_super_admin_edits_survive_a_restart(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    edited = await client.patch(
        "/api/v1/admin/plans/premium",
        headers=root.headers,
        json={"monthly_fee_usd": "299.00", "seats": 75},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["monthly_fee_usd"] == "299.00"
    gone = await client.delete("/api/v1/admin/plans/team", headers=root.headers)
    assert gone.status_code == 204, gone.text
    # What every start-up does: only plans missing from the table are added.
    assert await load_default_plans(runtime.session_factory) == 0
    async with runtime.session_factory() as session:
        premium = await session.scalar(select(Plan).where(Plan.key == "premium"))
        team = await session.scalar(select(Plan).where(Plan.key == "team"))
    assert premium is not None
    assert str(premium.monthly_fee_usd) == "299.00"
    assert premium.seats == 75
    assert team is not None
    assert team.archived
    listed = await client.get("/api/v1/admin/plans", headers=root.headers)
    assert "team" not in [plan["key"] for plan in listed.json()]
    # A plan missing altogether (a new one shipped) is added.
    async with runtime.session_factory() as session:
        await session.delete(premium)
        await session.commit()
    assert await load_default_plans(runtime.session_factory) == 1


async def test_plan_changes_are_audited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    created = await client.post(
        "/api/v1/admin/plans",
        headers=root.headers,
        json={"key": "startup", "name": "Startup", "monthly_fee_usd": "99.00", "seats": 5},
    )
    assert created.status_code == 201, created.text
    again = await client.post(
        "/api/v1/admin/plans",
        headers=root.headers,
        json={"key": "startup", "name": "Startup", "monthly_fee_usd": "99.00"},
    )
    assert again.status_code == 409
    await client.patch("/api/v1/admin/plans/startup", headers=root.headers, json={"seats": 8})
    from apiary.audit.models import AuditEntry

    async with runtime.session_factory() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.target_type == "plan").order_by(AuditEntry.seq)
            )
        ).all()
    assert [e.action for e in entries] == ["plan.created", "plan.updated"]
    assert entries[1].details == {"seats": [5, 8]}
    assert entries[1].actor_user_id is not None


async def test_a_plan_in_use_cannot_be_deleted(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    await make_tenant(runtime, client, "acme", plan="team")
    refused = await client.delete("/api/v1/admin/plans/team", headers=root.headers)
    assert refused.status_code == 409
    assert refused.json()["error"] == "Conflict"
    assert "acme" in refused.json()["detail"]


async def test_an_edit_leaving_tenants_over_is_refused_unless_forced(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    acme = await make_tenant(runtime, client, "acme", plan="team")
    await make_member(client, acme, Role.DEVELOPER)
    await make_member(client, acme, Role.VIEWER)  # three members now
    await make_tenant(runtime, client, "globex", plan="team")  # one member: fits
    refused = await client.patch(
        "/api/v1/admin/plans/team", headers=root.headers, json={"seats": 2}
    )
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "acme (seats 3 > 2)" in detail
    assert "globex" not in detail
    assert "force=true" in detail
    unchanged = await client.get("/api/v1/admin/plans/team", headers=root.headers)
    assert unchanged.json()["seats"] == 10
    forced = await client.patch(
        "/api/v1/admin/plans/team?force=true", headers=root.headers, json={"seats": 2}
    )
    assert forced.status_code == 200
    assert forced.json()["seats"] == 2
    # acme keeps its three members, and a fourth is refused.
    more = await client.post(
        "/api/v1/members",
        headers=acme.admin.headers,
        json={"email": "four@acme.example", "role": "viewer", "password": "x" * 12},
    )
    assert more.status_code == 402
    assert more.json()["error"] == "EntitlementExceeded"


async def test_moving_a_tenant_between_plans(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    acme = await make_tenant(runtime, client, "acme", plan="premium")
    for role in (Role.DEVELOPER, Role.VIEWER, Role.BILLING_ADMIN):
        await make_member(client, acme, role)
    unknown = await client.patch(
        f"/api/v1/tenants/{acme.id}", headers=root.headers, json={"plan": "gold"}
    )
    assert unknown.status_code == 422
    assert "'gold' is not a plan" in unknown.json()["detail"]
    down = await client.patch(
        f"/api/v1/tenants/{acme.id}", headers=root.headers, json={"plan": "free"}
    )
    assert down.status_code == 409  # four members, Free has three seats
    assert "seats 4 > 3" in down.json()["detail"]
    forced = await client.patch(
        f"/api/v1/tenants/{acme.id}", headers=root.headers, json={"plan": "free", "force": True}
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["plan"] == "free"
    seen = await client.get("/api/v1/billing/plan", headers=acme.admin.headers)
    assert seen.json()["plan"]["key"] == "free"
    seats = next(e for e in seen.json()["entitlements"] if e["entitlement"] == "seats")
    assert seats == {"entitlement": "seats", "limit": 3, "used": 4}


async def test_bad_plans_are_refused_by_name(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    cases = [
        ({"key": "Bad Key", "name": "x", "monthly_fee_usd": "1"}, "body.key"),
        ({"key": "neg", "name": "x", "monthly_fee_usd": "-1"}, "body.monthly_fee_usd"),
        ({"key": "cents", "name": "x", "monthly_fee_usd": "1.001"}, "body.monthly_fee_usd"),
        ({"key": "seats", "name": "x", "monthly_fee_usd": "1", "seats": -1}, "body.seats"),
        (
            {
                "key": "tok",
                "name": "x",
                "monthly_fee_usd": "1",
                "overage": False,
                "included_tokens": 1000,
            },
            "included_tokens: a plan without overage caps spend",
        ),
    ]
    for body, named in cases:
        response = await client.post("/api/v1/admin/plans", headers=root.headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert named in response.json()["detail"]
    null_fee = await client.patch(
        "/api/v1/admin/plans/team", headers=root.headers, json={"monthly_fee_usd": None}
    )
    assert null_fee.status_code == 422
    unlimited = await client.patch(
        "/api/v1/admin/plans/team", headers=root.headers, json={"seats": None}
    )
    assert unlimited.status_code == 200
    assert unlimited.json()["seats"] is None
    missing = await client.get("/api/v1/admin/plans/gold", headers=root.headers)
    assert missing.status_code == 404


async def test_a_plan_s_ledger_retention_is_set_and_cleared(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """How long a plan's raw ledger rows are kept (docs/usage.md): a number of days, or null
    for the platform's default; zero days would erase the ledger as it is written."""
    root = await make_super_admin(runtime, client)
    created = await client.post(
        "/api/v1/admin/plans",
        headers=root.headers,
        json={"key": "short", "name": "Short", "monthly_fee_usd": "1", "ledger_retention_days": 30},
    )
    assert created.status_code in (200, 201), created.text
    assert created.json()["ledger_retention_days"] == 30
    async with runtime.session_factory() as session:
        stored = await session.scalar(select(Plan).where(Plan.key == "short"))
        assert stored is not None
        assert stored.ledger_retention_days == 30
    cleared = await client.patch(
        "/api/v1/admin/plans/short", headers=root.headers, json={"ledger_retention_days": None}
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["ledger_retention_days"] is None
    zero = await client.patch(
        "/api/v1/admin/plans/short", headers=root.headers, json={"ledger_retention_days": 0}
    )
    assert zero.status_code == 422
    assert "ledger_retention_days" in zero.json()["detail"]
