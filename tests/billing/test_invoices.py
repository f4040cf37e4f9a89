"""Invoices as their readers meet them: PDF and CSV downloads, who may read them, and the
super admin's revenue, margin and cost per request."""

from __future__ import annotations

import csv
import io

import httpx
import pypdf

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.billing.helpers import add_ledger, at, created_on, ledger_entry
from tests.factories import Caller, TenantFixture, make_member, make_super_admin, make_tenant

NOVEMBER = "2026-11"


async def _invoiced(
    client: httpx.AsyncClient, runtime: Runtime, root: Caller, name: str, cost: float, calls: int
) -> tuple[TenantFixture, str]:
    """A Team tenant with `calls` calls costing `cost` in all in November, closed."""
    tenant = await make_tenant(runtime, client, name, plan="team")
    await created_on(runtime, tenant.id, at("2026-10-01T00:00:00"))
    await add_ledger(
        runtime,
        [
            ledger_entry(tenant.id, at("2026-11-10T00:00:00"), cost_usd=cost / calls)
            for _ in range(calls)
        ],
    )
    closed = await client.post(
        "/api/v1/admin/billing/close", headers=root.headers, json={"period": NOVEMBER}
    )
    assert closed.status_code == 200, closed.text
    listed = await client.get("/api/v1/billing/invoices", headers=tenant.admin.headers)
    return tenant, listed.json()["items"][0]["id"]


async def test_pdf_and_csv_downloads(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    acme, invoice_id = await _invoiced(client, runtime, root, "acme", cost=35.0, calls=4)
    billing = await make_member(client, acme, Role.BILLING_ADMIN)

    pdf = await client.get(f"/api/v1/billing/invoices/{invoice_id}/pdf", headers=billing.headers)
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert 'filename="INV-000001.pdf"' in pdf.headers["content-disposition"]
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    text = " ".join(text.split())
    assert "Invoice INV-000001" in text
    assert "Billed to: acme" in text
    assert "Period: 2026-11" in text
    assert "Team plan 49.00 USD" in text
    # $35 of provider cost, $25 of it included; $10 at Team's 30 % markup.
    assert "Model usage beyond the allowance: provider cost $10.00 + 30% markup 13.00 USD" in text
    assert "Total 62.00 USD" in text

    exported = await client.get(
        f"/api/v1/billing/invoices/{invoice_id}/csv", headers=billing.headers
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["kind"], r["amount_minor"]) for r in rows] == [
        ("plan_fee", "4900"),
        ("overage", "1300"),
        ("subtotal", "6200"),
        ("tax", "0"),
        ("total", "6200"),
    ]
    assert {r["invoice"] for r in rows} == {"INV-000001"}


async def test_who_may_read_invoices(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    acme, invoice_id = await _invoiced(client, runtime, root, "acme", cost=1.0, calls=1)
    globex = await make_tenant(runtime, client, "globex", plan="team")
    paths = [
        "/api/v1/billing/plan",
        "/api/v1/billing/invoices",
        f"/api/v1/billing/invoices/{invoice_id}",
        f"/api/v1/billing/invoices/{invoice_id}/pdf",
        f"/api/v1/billing/invoices/{invoice_id}/csv",
    ]
    for role in (Role.VIEWER, Role.DEVELOPER):
        caller = await make_member(client, acme, role)
        for path in paths:
            response = await client.get(path, headers=caller.headers)
            assert response.status_code == 403, (role, path, response.text)
            assert "billing:read" in response.json()["detail"]
    billing = await make_member(client, acme, Role.BILLING_ADMIN)
    for caller in (billing, acme.admin):
        for path in paths:
            response = await client.get(path, headers=caller.headers)
            assert response.status_code == 200, (path, response.text)
    # Another tenant's invoice does not exist for globex's admin.
    for path in paths[2:]:
        response = await client.get(path, headers=globex.admin.headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "NotFound"
    # The platform's routes are the super admin's alone.
    for path in ("/api/v1/admin/plans", "/api/v1/admin/billing/revenue"):
        for caller in (billing, acme.admin):
            assert (await client.get(path, headers=caller.headers)).status_code == 403
    close = await client.post(
        "/api/v1/admin/billing/close", headers=acme.admin.headers, json={"period": NOVEMBER}
    )
    assert close.status_code == 403


async def test_revenue_margin_and_cost_per_request(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    await _invoiced(client, runtime, root, "acme", cost=35.0, calls=4)  # billed $62
    await _invoiced(client, runtime, root, "globex", cost=5.0, calls=1)  # billed $49
    report = await client.get(
        "/api/v1/admin/billing/revenue?from=2026-11&to=2026-11", headers=root.headers
    )
    assert report.status_code == 200, report.text
    body = report.json()
    by_name = {row["tenant_name"]: row for row in body["tenants"]}
    assert by_name["acme"]["revenue_usd"] == "62.00"
    assert by_name["acme"]["provider_cost_usd"] == "35.000000"
    assert by_name["acme"]["gross_margin"] == "0.4355"  # (62 - 35) / 62
    assert by_name["acme"]["cost_per_request_usd"] == "8.750000"
    assert by_name["globex"]["gross_margin"] == "0.8980"  # (49 - 5) / 49
    total = body["total"]
    assert total["revenue_usd"] == "111.00"
    assert total["provider_cost_usd"] == "40.000000"
    assert total["gross_margin"] == "0.6396"
    assert total["calls"] == 5
    assert total["cost_per_request_usd"] == "8.000000"
    bad = await client.get("/api/v1/admin/billing/revenue?from=2026-13", headers=root.headers)
    assert bad.status_code == 422
    early = await client.post(
        "/api/v1/admin/billing/close", headers=root.headers, json={"period": "2099-01"}
    )
    assert early.status_code == 422
    assert "has not ended yet" in early.json()["detail"]
