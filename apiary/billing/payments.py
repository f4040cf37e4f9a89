"""Payments through Stripe, optional: without `APIARY_BILLING__STRIPE__API_KEY` billing is
"invoice only" and nothing here calls Stripe.

With it, Apiary's invoices stay the record and Stripe collects them: each tenant gets a
Stripe customer (created when first needed), a subscription on its plan's Stripe price
when the plan names one, and each invoice a period close issues is mirrored as a Stripe
invoice with the same lines, then finalized. Webhooks bring the payment status back.

Three rules hold throughout:
- Stripe is never called inside a database transaction: the closing transaction holds the
  invoice counter's row lock, and a slow Stripe would hold every other close up. The close
  marks its invoice `pending_sync`; `sync` runs after, reading what to send in one short
  transaction and storing what Stripe answered in another.
- Every call that creates something carries an idempotency key made of Apiary ids, so a
  retry, or a second replica syncing at once, gets Stripe's first answer, not a duplicate.
- A Stripe outage fails nothing of Apiary's: the invoice stays `pending_sync` with the
  error, and the next close (or `apiary billing sync`) sends it.

Webhook events are applied once per event id (the `stripe_events` table, in the same
transaction as what the event changes), and an older event never overrides a newer one:
`paid` and `void` are final in Stripe, and between `open` and `failed` the later event's
`created` wins.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.alerts.service import alert_service, payment_failed
from apiary.audit.service import audit_service
from apiary.auth.context import Actor, AuthContext
from apiary.authz.scope import TenantScope
from apiary.billing import schemas
from apiary.billing.money import format_minor
from apiary.billing.payments_repository import payments_repository
from apiary.billing.repository import billing_repository
from apiary.config import StripeSettings
from apiary.db import session_scope
from apiary.errors import BadRequest, NotFound

if TYPE_CHECKING:
    import stripe

log = logging.getLogger("apiary.billing.payments")


class PaymentStatus(StrEnum):
    NOT_APPLICABLE = "not_applicable"  # invoice only: Stripe is not configured, or nothing is due
    PENDING_SYNC = "pending_sync"  # to be sent to Stripe
    OPEN = "open"
    PAID = "paid"
    FAILED = "failed"
    VOID = "void"


# A paid or voided invoice never changes again in Stripe: no event, however late, undoes it.
_FINAL = frozenset({PaymentStatus.PAID, PaymentStatus.VOID})

# What each invoice event says about the invoice's payment.
_INVOICE_EVENTS = {
    "invoice.finalized": PaymentStatus.OPEN,
    "invoice.paid": PaymentStatus.PAID,
    "invoice.payment_succeeded": PaymentStatus.PAID,
    "invoice.payment_failed": PaymentStatus.FAILED,
    "invoice.marked_uncollectible": PaymentStatus.FAILED,
    "invoice.voided": PaymentStatus.VOID,
}
# What a tenant is told of each failure event.
_FAILURE_REASONS = {
    "invoice.payment_failed": "Stripe could not collect the payment; it retries on its schedule",
    "invoice.marked_uncollectible": "Stripe marked the invoice uncollectible",
}
_SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)
# A Stripe invoice's `status` as Apiary's payment status, once it is finalized.
_STRIPE_STATUS = {
    "open": PaymentStatus.OPEN,
    "paid": PaymentStatus.PAID,
    "void": PaymentStatus.VOID,
    "uncollectible": PaymentStatus.FAILED,
}


# -- talking to Stripe ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceToSend:
    """What a Stripe invoice is made of, read in one short transaction."""

    tenant_id: uuid.UUID
    tenant_name: str
    invoice_id: uuid.UUID
    number: str
    period: str
    currency: str
    lines: list[tuple[str, int]]  # (description, amount in minor units)
    customer_id: str | None
    stripe_invoice_id: str | None  # created by an earlier run that did not finish


class StripeGateway:
    """The official SDK's client, one per sync run or webhook; calls are async (httpx)."""

    def __init__(self, settings: StripeSettings) -> None:
        import stripe  # some 20 MiB: only where payments go through Stripe

        assert settings.api_key is not None
        self._http = stripe.HTTPXClient(timeout=settings.timeout_s)
        self.client = stripe.StripeClient(
            settings.api_key.get_secret_value(),
            base_addresses={"api": settings.api_base},
            http_client=self._http,
            max_network_retries=settings.max_network_retries,
        )
        self._days_until_due = settings.days_until_due

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, tenant_id: uuid.UUID, name: str) -> str:
        customer = await self.client.v1.customers.create_async(
            params={"name": name, "metadata": {"apiary_tenant_id": str(tenant_id)}},
            options={"idempotency_key": f"apiary-customer-{tenant_id}"},
        )
        return customer.id

    async def put_on_price(
        self,
        customer_id: str,
        *,
        tenant_id: uuid.UUID,
        subscription_id: str | None,
        price_id: str,
    ) -> stripe.Subscription:
        """Create the tenant's subscription on `price_id`, or move its one item there."""
        if subscription_id is None:
            return await self.client.v1.subscriptions.create_async(
                params={
                    "customer": customer_id,
                    "items": [{"price": price_id}],
                    "collection_method": "send_invoice",
                    "days_until_due": self._days_until_due,
                    "metadata": {"apiary_tenant_id": str(tenant_id)},
                },
                options={"idempotency_key": f"apiary-subscription-{tenant_id}"},
            )
        current = await self.client.v1.subscriptions.retrieve_async(subscription_id)
        item = current["items"]["data"][0]["id"]
        return await self.client.v1.subscriptions.update_async(
            subscription_id,
            params={
                "items": [{"id": item, "price": price_id}],
                # Apiary's invoice prorates the fee itself; Stripe must not do it again.
                "proration_behavior": "none",
            },
            options={"idempotency_key": f"apiary-subscription-{subscription_id}-{price_id}"},
        )

    async def create_invoice(self, invoice: InvoiceToSend, customer_id: str) -> stripe.Invoice:
        """The invoice in Stripe, a draft without lines yet."""
        return await self.client.v1.invoices.create_async(
            params={
                "customer": customer_id,
                "currency": invoice.currency.lower(),
                "collection_method": "send_invoice",
                "days_until_due": self._days_until_due,
                # Stripe must not finalize it on its own before the lines are in.
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "description": f"{invoice.number}, {invoice.period}",
                "metadata": {
                    "apiary_invoice_id": str(invoice.invoice_id),
                    "apiary_tenant_id": str(invoice.tenant_id),
                    "apiary_number": invoice.number,
                },
            },
            options={"idempotency_key": f"apiary-invoice-{invoice.invoice_id}"},
        )

    async def retrieve_invoice(self, stripe_invoice_id: str) -> stripe.Invoice:
        return await self.client.v1.invoices.retrieve_async(stripe_invoice_id)

    async def complete_invoice(
        self, invoice: InvoiceToSend, draft: stripe.Invoice
    ) -> stripe.Invoice:
        """Add the lines to a draft and finalize it; an invoice already finalized (by a
        run that died before storing the outcome) is returned as it is."""
        assert draft.id is not None
        if draft.status != "draft":
            return draft
        key = f"apiary-invoice-{invoice.invoice_id}"
        # add_lines adds them all or none: a draft with lines has them all.
        if invoice.lines and not draft.lines.data:
            await self.client.v1.invoices.add_lines_async(
                draft.id,
                params={
                    "lines": [
                        {"amount": amount, "description": description}
                        for description, amount in invoice.lines
                    ]
                },
                options={"idempotency_key": f"{key}-lines"},
            )
        return await self.client.v1.invoices.finalize_invoice_async(
            draft.id,
            params={"auto_advance": True},  # Stripe sends it and collects from here
            options={"idempotency_key": f"{key}-finalize"},
        )


def _stripe_error(error: stripe.StripeError) -> str:
    """What Stripe (or the network) said, for the invoice and the log; never the key."""
    status = f"HTTP {error.http_status}: " if error.http_status else ""
    return f"{type(error).__name__}: {status}{error.user_message or 'no answer'}"[:500]


def _unavailable(error: stripe.StripeError) -> bool:
    """Stripe unreachable, overloaded or failing, rather than refusing this one request."""
    import stripe

    return isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or (
        error.http_status is not None and error.http_status >= 500
    )


# -- the service ---------------------------------------------------------------------------


@dataclass(slots=True)
class WebhookOutcome:
    duplicate: bool = False
    applied: bool = False


class PaymentService:
    async def sync(
        self, factory: async_sessionmaker[AsyncSession], settings: StripeSettings
    ) -> schemas.PaymentSync | None:
        """Send every invoice still pending to Stripe and put tenants on their plan's
        Stripe price; what fails stays pending for the next run. None: invoice only."""
        if not settings.enabled:
            return None
        import stripe

        gateway = StripeGateway(settings)
        synced = 0
        pending = 0
        subscriptions = 0
        errors: list[str] = []
        try:
            async with factory() as session:
                work = await payments_repository.invoices_to_send(session)
                plans = await payments_repository.subscriptions_to_sync(session)
            for index, (tenant_id, invoice_id) in enumerate(work):
                try:
                    await self._send(factory, gateway, tenant_id, invoice_id)
                    synced += 1
                except stripe.StripeError as error:
                    pending += 1
                    errors.append(f"invoice {invoice_id}: {_stripe_error(error)}")
                    await self._sync_failed(factory, tenant_id, invoice_id, error)
                    if _unavailable(error):
                        # Stripe is down: each further call would wait out its timeout and
                        # retries, holding up the close that called us. The rest wait.
                        pending += len(work) - index - 1
                        plans = []
                        break
            for tenant_id, name, price_id in plans:
                try:
                    await self._subscribe(factory, gateway, tenant_id, name, price_id)
                    subscriptions += 1
                except stripe.StripeError as error:
                    errors.append(f"subscription of tenant {tenant_id}: {_stripe_error(error)}")
                    log.warning(
                        "stripe: subscription of tenant %s not synced: %s",
                        tenant_id,
                        _stripe_error(error),
                    )
        finally:
            await gateway.close()
        return schemas.PaymentSync(
            invoices_synced=synced,
            invoices_pending=pending,
            subscriptions_synced=subscriptions,
            errors=errors,
        )

    async def _customer(
        self,
        factory: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        tenant_id: uuid.UUID,
        name: str,
    ) -> str:
        scope = TenantScope(tenant_id)
        async with factory() as session:
            row = await payments_repository.customer(session, scope)
            if row is not None:
                return row.customer_id
        customer_id = await gateway.create_customer(tenant_id, name)
        async with session_scope(factory) as session:
            row = await payments_repository.save_customer(session, scope, customer_id)
            return row.customer_id

    async def _send(
        self,
        factory: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        tenant_id: uuid.UUID,
        invoice_id: uuid.UUID,
    ) -> None:
        scope = TenantScope(tenant_id)
        async with factory() as session:
            invoice = await billing_repository.invoice(session, scope, invoice_id)
            tenant = await billing_repository.tenant(session, tenant_id)
            assert tenant is not None
            customer = await payments_repository.customer(session, scope)
            lines = await billing_repository.lines(session, scope, invoice_id)
            sending = InvoiceToSend(
                tenant_id=tenant_id,
                tenant_name=tenant.name,
                invoice_id=invoice_id,
                number=invoice.number,
                period=invoice.period,
                currency=invoice.currency,
                lines=[(line.description, line.amount_minor) for line in lines],
                customer_id=customer.customer_id if customer else None,
                stripe_invoice_id=invoice.stripe_invoice_id,
            )
        if sending.stripe_invoice_id is not None:
            draft = await gateway.retrieve_invoice(sending.stripe_invoice_id)
        else:
            customer_id = sending.customer_id or await self._customer(
                factory, gateway, tenant_id, sending.tenant_name
            )
            draft = await gateway.create_invoice(sending, customer_id)
            # Kept at once: Stripe forgets idempotency keys after 24 hours, and a run after
            # that must finish this invoice, not create a second one.
            async with session_scope(factory) as session:
                invoice = await billing_repository.invoice(session, scope, invoice_id)
                invoice.stripe_invoice_id = draft.id
                await session.flush()
        sent = await gateway.complete_invoice(sending, draft)
        async with session_scope(factory) as session:
            invoice = await billing_repository.invoice(session, scope, invoice_id)
            invoice.stripe_invoice_id = sent.id
            invoice.payment_error = None
            # A webhook may have told us more already (the invoice paid before this run
            # got to store its id): what it applied stands.
            if invoice.payment_event_at is None:
                invoice.payment_status = _STRIPE_STATUS.get(
                    sent.status or "", PaymentStatus.OPEN
                ).value
            await session.flush()
        log.info("stripe: invoice %s sent as %s", sending.number, sent.id)

    async def _sync_failed(
        self,
        factory: async_sessionmaker[AsyncSession],
        tenant_id: uuid.UUID,
        invoice_id: uuid.UUID,
        error: stripe.StripeError,
    ) -> None:
        log.warning(
            "stripe: invoice %s not sent, left pending: %s", invoice_id, _stripe_error(error)
        )
        async with session_scope(factory) as session:
            invoice = await billing_repository.invoice(session, TenantScope(tenant_id), invoice_id)
            invoice.payment_error = _stripe_error(error)
            await session.flush()

    async def _subscribe(
        self,
        factory: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        tenant_id: uuid.UUID,
        name: str,
        price_id: str,
    ) -> None:
        scope = TenantScope(tenant_id)
        customer_id = await self._customer(factory, gateway, tenant_id, name)
        async with factory() as session:
            row = await payments_repository.customer(session, scope)
            subscription_id = row.subscription_id if row else None
        subscription = await gateway.put_on_price(
            customer_id, tenant_id=tenant_id, subscription_id=subscription_id, price_id=price_id
        )
        async with session_scope(factory) as session:
            row = await payments_repository.customer(session, scope)
            assert row is not None
            row.subscription_id = subscription.id
            row.subscription_price_id = price_id
            if row.subscription_event_at is None:
                row.subscription_status = subscription.status
            await session.flush()

    # -- webhooks ----------------------------------------------------------------------

    def verify(
        self, payload: bytes, signature: str | None, settings: StripeSettings
    ) -> dict[str, Any]:
        """The event in a webhook whose `Stripe-Signature` the SDK verified with the
        endpoint's secret; a bad, stale or missing signature is a 400 (and logged)."""
        if settings.webhook_secret is None:
            # Not a 5xx: nothing is down, and Stripe would retry a 5xx for days.
            raise NotFound(
                "Stripe webhooks are not configured on this deployment (billing is invoice "
                "only): set APIARY_BILLING__STRIPE__WEBHOOK_SECRET to the endpoint's signing "
                "secret"
            )
        if not signature:
            log.warning("stripe webhook refused: no Stripe-Signature header")
            raise BadRequest("Stripe-Signature: the header is missing; only Stripe may call this")
        import stripe

        try:
            event = stripe.Webhook.construct_event(
                payload,
                signature,
                settings.webhook_secret.get_secret_value(),
                tolerance=settings.webhook_tolerance_s,
            )
        except stripe.SignatureVerificationError as error:
            # The SDK's reason names what is wrong (no v1 signature, mismatch, too old),
            # never the secret.
            log.warning("stripe webhook refused: %s", error.user_message or error)
            raise BadRequest(
                f"Stripe-Signature: not a valid signature of this payload "
                f"({error.user_message or 'verification failed'})"
            ) from None
        except ValueError:
            log.warning("stripe webhook refused: the body is not a JSON event")
            raise BadRequest("the body is not a Stripe event (JSON)") from None
        data: dict[str, Any] = event.to_dict()
        if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
            raise BadRequest("the body is not a Stripe event (no id or type)")
        return data

    async def apply(self, session: AsyncSession, event: dict[str, Any]) -> WebhookOutcome:
        """Apply one verified event in the caller's transaction, once per event id."""
        event_type: str = event["type"]
        created = int(event.get("created") or 0)
        known = event_type in _INVOICE_EVENTS or event_type in _SUBSCRIPTION_EVENTS
        if not known:
            return WebhookOutcome()  # acknowledged, so Stripe stops sending it
        if not await payments_repository.record_event(
            session, event_id=event["id"], event_type=event_type, created=created
        ):
            return WebhookOutcome(duplicate=True)
        obj = (event.get("data") or {}).get("object") or {}
        customer_id = obj.get("customer")
        tenant_id = (
            await payments_repository.tenant_of_customer(session, customer_id)
            if isinstance(customer_id, str)
            else None
        )
        if tenant_id is None:
            log.info(
                "stripe webhook %s (%s): no tenant has customer %s",
                event["id"],
                event_type,
                customer_id,
            )
            return WebhookOutcome()
        scope = TenantScope(tenant_id)
        if event_type in _SUBSCRIPTION_EVENTS:
            return await self._apply_subscription(session, scope, event_type, created, obj)
        return await self._apply_invoice(session, scope, event, _INVOICE_EVENTS[event_type], obj)

    async def _apply_invoice(
        self,
        session: AsyncSession,
        scope: TenantScope,
        event: dict[str, Any],
        status: PaymentStatus,
        obj: dict[str, Any],
    ) -> WebhookOutcome:
        created = int(event.get("created") or 0)
        metadata = obj.get("metadata") or {}
        invoice = await payments_repository.invoice_for_stripe(
            session,
            scope,
            stripe_invoice_id=str(obj.get("id")),
            apiary_invoice_id=metadata.get("apiary_invoice_id"),
        )
        if invoice is None:
            log.info("stripe webhook %s: invoice %s is not Apiary's", event["id"], obj.get("id"))
            return WebhookOutcome()
        if invoice.stripe_invoice_id is None:
            invoice.stripe_invoice_id = str(obj["id"])
        current = PaymentStatus(invoice.payment_status)
        if not _supersedes(current, invoice.payment_event_at, status, created):
            log.info(
                "stripe webhook %s: %s left as %s (the event is older, or the invoice final)",
                event["id"],
                invoice.number,
                current.value,
            )
            await session.flush()
            return WebhookOutcome()
        invoice.payment_status = status.value
        invoice.payment_event_at = created
        await session.flush()
        await audit_service.record(
            session,
            action=f"invoice.payment_{status.value}",
            actor=_STRIPE,
            tenant_id=scope.tenant_id,
            target_type="invoice",
            target_id=invoice.id,
            details={
                "number": invoice.number,
                "stripe_invoice_id": invoice.stripe_invoice_id,
                "stripe_event_id": event["id"],
                "was": current.value,
            },
        )
        if status is PaymentStatus.FAILED:
            # In this transaction: the alert exists exactly when the failure is recorded,
            # and a redelivered event (refused above by its id) raises none.
            amount_due = int(obj.get("amount_due") or invoice.total_minor)
            await alert_service.notify(
                session,
                payment_failed(
                    scope.tenant_id,
                    payment_id=str(obj["id"]),
                    reason=_FAILURE_REASONS.get(event["type"], event["type"]),
                    amount=format_minor(amount_due, invoice.currency),
                    invoice_number=invoice.number,
                ),
            )
        return WebhookOutcome(applied=True)

    async def _apply_subscription(
        self,
        session: AsyncSession,
        scope: TenantScope,
        event_type: str,
        created: int,
        obj: dict[str, Any],
    ) -> WebhookOutcome:
        row = await payments_repository.customer(session, scope)
        assert row is not None  # the tenant was found by this very row
        if row.subscription_event_at is not None and created < row.subscription_event_at:
            return WebhookOutcome()
        row.subscription_id = str(obj.get("id"))
        status = obj.get("status")
        row.subscription_status = (
            "canceled" if event_type.endswith(".deleted") else str(status) if status else None
        )
        row.subscription_event_at = created
        await session.flush()
        return WebhookOutcome(applied=True)

    # -- the tenant's view -------------------------------------------------------------

    async def account(
        self, session: AsyncSession, auth: AuthContext, settings: StripeSettings
    ) -> schemas.PaymentAccount:
        scope = auth.scope
        counts = await payments_repository.count_by_status(session, scope)
        row = await payments_repository.customer(session, scope)
        return schemas.PaymentAccount(
            mode="stripe" if settings.enabled else "invoice_only",
            customer_id=row.customer_id if row else None,
            subscription_id=row.subscription_id if row else None,
            subscription_status=row.subscription_status if row else None,
            invoices_pending_sync=counts.get(PaymentStatus.PENDING_SYNC, 0),
            invoices_open=counts.get(PaymentStatus.OPEN, 0),
            invoices_failed=counts.get(PaymentStatus.FAILED, 0),
        )


def _supersedes(
    current: PaymentStatus, current_at: int | None, new: PaymentStatus, new_at: int
) -> bool:
    if current in _FINAL:
        return False
    if new in _FINAL or current_at is None:
        return True
    return new_at >= current_at


_STRIPE = Actor(ip="stripe")  # a webhook: no person, no key

payment_service = PaymentService()

__all__ = [
    "PaymentStatus",
    "payment_service",
]
