"""Routes of billing: `/api/v1/billing` (the tenant's plan, usage, invoices, settings:
billing and tenant admins) and `/api/v1/admin/...` (plans, closing a month, credits and
revenue: the super admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.billing import schemas
from apiary.billing.payments import payment_service
from apiary.billing.render import invoice_csv, invoice_pdf
from apiary.billing.service import billing_service, last_period, plan_service
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging, page_of
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/billing", tags=["billing"])
admin_router = APIRouter(prefix="/admin", tags=["plans"])

Reader = Annotated[AuthContext, authorize(Permission.BILLING_READ)]
Writer = Annotated[AuthContext, authorize(Permission.BILLING_WRITE)]
SuperAdmin = Annotated[AuthContext, authorize(Permission.PLANS_MANAGE)]


@router.get("/plan", summary="The tenant's plan, its usage against each entitlement, this month")
async def get_plan(auth: Reader, session: DbSession) -> schemas.TenantPlan:
    return await billing_service.tenant_plan(session, auth)


@router.get("/settings", summary="The tenant's billing settings")
async def get_settings(
    auth: Reader, session: DbSession, runtime: RuntimeDep
) -> schemas.BillingSettings:
    return await billing_service.settings(session, auth, runtime.settings.billing)


@router.patch("/settings", summary="Change the invoices' currency (from the next close)")
async def update_settings(
    auth: Writer, session: DbSession, runtime: RuntimeDep, body: schemas.BillingSettingsUpdate
) -> schemas.BillingSettings:
    return await billing_service.update_settings(session, auth, body, runtime.settings.billing)


@router.get(
    "/payment",
    summary="How the tenant pays: invoice only, or through Stripe (customer, subscription)",
)
async def get_payment(
    auth: Reader, session: DbSession, runtime: RuntimeDep
) -> schemas.PaymentAccount:
    return await payment_service.account(session, auth, runtime.settings.billing.stripe)


@router.post(
    "/stripe/webhook",
    summary="Stripe's webhook: payment and subscription events (signed; no bearer token)",
    responses=documented(400, 404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def stripe_webhook(
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    stripe_signature: Annotated[
        str | None, Header(description="Stripe's signature of the body: t=...,v1=...")
    ] = None,
) -> schemas.WebhookReceipt:
    # The raw body: the signature is over the bytes as sent, not a re-encoding of them.
    payload = await request.body()
    event = payment_service.verify(payload, stripe_signature, runtime.settings.billing.stripe)
    outcome = await payment_service.apply(session, event)
    return schemas.WebhookReceipt(
        received=True, duplicate=outcome.duplicate, applied=outcome.applied
    )


@router.get("/invoices", summary="The tenant's invoices, oldest first")
async def list_invoices(auth: Reader, session: DbSession, page: Paging) -> Page[schemas.Invoice]:
    rows, total = await billing_service.invoices(session, auth, page)
    return page_of(schemas.Invoice, rows, total, page)


@router.get("/invoices/{invoice_id}", summary="An invoice and its lines")
async def get_invoice(
    auth: Reader, session: DbSession, invoice_id: uuid.UUID
) -> schemas.InvoiceDetail:
    invoice, lines = await billing_service.invoice(session, auth, invoice_id)
    return schemas.InvoiceDetail(
        **schemas.Invoice.model_validate(invoice).model_dump(),
        lines=[schemas.InvoiceLine.model_validate(line) for line in lines],
    )


@router.get(
    "/invoices/{invoice_id}/pdf",
    summary="An invoice as PDF",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def invoice_as_pdf(
    auth: Reader, session: DbSession, runtime: RuntimeDep, invoice_id: uuid.UUID
) -> Response:
    invoice, lines = await billing_service.invoice(session, auth, invoice_id)
    tenant = await billing_service.tenant_name(session, auth)
    body = invoice_pdf(invoice, lines, tenant_name=tenant, issuer=runtime.settings.billing.issuer)
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.pdf"'},
    )


@router.get(
    "/invoices/{invoice_id}/csv",
    summary="An invoice's lines as CSV",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def invoice_as_csv(auth: Reader, session: DbSession, invoice_id: uuid.UUID) -> Response:
    invoice, lines = await billing_service.invoice(session, auth, invoice_id)
    tenant = await billing_service.tenant_name(session, auth)
    return Response(
        invoice_csv(invoice, lines, tenant_name=tenant),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.csv"'},
    )


@admin_router.get("/plans", summary="List plans")
async def list_plans(
    auth: SuperAdmin,
    session: DbSession,
    archived: Annotated[bool, Query(description="Include archived plans")] = False,
) -> list[schemas.Plan]:
    return [
        schemas.Plan.model_validate(plan)
        for plan in await plan_service.list(session, archived=archived)
    ]


@admin_router.post(
    "/plans",
    status_code=status.HTTP_201_CREATED,
    summary="Create a plan",
    responses=documented(409),
)
async def create_plan(
    auth: SuperAdmin, session: DbSession, body: schemas.PlanCreate
) -> schemas.Plan:
    return schemas.Plan.model_validate(await plan_service.create(session, auth, body))


@admin_router.get("/plans/{key}", summary="Get a plan")
async def get_plan_by_key(auth: SuperAdmin, session: DbSession, key: str) -> schemas.Plan:
    return schemas.Plan.model_validate(await plan_service.get(session, key))


@admin_router.patch(
    "/plans/{key}",
    summary="Change a plan (409 if tenants on it would be over it, unless force)",
    responses=documented(409),
)
async def update_plan(
    auth: SuperAdmin,
    session: DbSession,
    runtime: RuntimeDep,
    key: str,
    body: schemas.PlanUpdate,
    force: Annotated[
        bool,
        Query(description="Apply it even if tenants on the plan hold more than it allows"),
    ] = False,
) -> schemas.Plan:
    plan = await plan_service.update(session, auth, key, body, force=force)
    runtime.limits.forget_all()  # the plan's rates and cap, on this replica at once
    return schemas.Plan.model_validate(plan)


@admin_router.delete(
    "/plans/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Archive a plan no tenant is on (409 if one is)",
    responses=documented(409),
)
async def delete_plan(auth: SuperAdmin, session: DbSession, key: str) -> None:
    await plan_service.archive(session, auth, key)


@admin_router.post(
    "/billing/close",
    summary="Close a month: issue every tenant's invoice for it (idempotent)",
    responses=documented(422),
)
async def close_period(
    auth: SuperAdmin, runtime: RuntimeDep, body: schemas.CloseRequest
) -> schemas.CloseResult:
    return await billing_service.close_period(
        runtime.session_factory, body.period, runtime.settings.billing
    )


@admin_router.post(
    "/tenants/{tenant_id}/credits",
    status_code=status.HTTP_201_CREATED,
    summary="Credit a tenant: taken off its next invoice",
)
async def add_credit(
    auth: SuperAdmin, session: DbSession, tenant_id: uuid.UUID, body: schemas.CreditCreate
) -> schemas.Credit:
    credit = await billing_service.add_credit(session, auth, tenant_id, body)
    return schemas.Credit.model_validate(credit)


@admin_router.get(
    "/billing/revenue",
    summary="Revenue, provider cost, gross margin and cost per request, per tenant and overall",
)
async def revenue(
    auth: SuperAdmin,
    session: DbSession,
    start: Annotated[
        schemas.Period | None, Query(alias="from", description="First period, YYYY-MM")
    ] = None,
    end: Annotated[
        schemas.Period | None,
        Query(alias="to", description="Last period, YYYY-MM; default: last month"),
    ] = None,
) -> schemas.Revenue:
    end = end or last_period()
    return await billing_service.revenue(session, start=start or end, end=end)
