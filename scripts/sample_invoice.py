"""Seed one tenant's month in a throwaway embedded database, close it, and write the
invoice's PDF: the sample shown in docs (`python scripts/sample_invoice.py OUT.pdf`).

Acme signs up on Free in October, moves to Premium on 16 November, spends $212.40 of
provider cost in November over 3,480 calls, and has a $20 credit; tax at 20 %."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from apiary import migrations
from apiary.billing.models import Credit, Invoice, InvoiceLine, PlanChange
from apiary.billing.render import invoice_pdf
from apiary.billing.service import billing_service
from apiary.config import BillingSettings, Settings
from apiary.db import new_id, session_scope
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from apiary.usage.ledger import store_entries


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def main(out: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="apiary-invoice-"))
    settings = Settings(data_dir=data_dir, jwt_secret=secrets.token_urlsafe(32))  # type: ignore[arg-type]
    settings.prepare_data_dir()
    await asyncio.to_thread(migrations.upgrade, settings.sqlalchemy_url)
    runtime = Runtime.build(settings)
    try:
        async with session_scope(runtime.session_factory) as session:
            tenant = Tenant(name="Acme Corp", plan="premium", created_at=_at("2026-10-12T09:00:00"))
            session.add(tenant)
            await session.flush()
            session.add(
                PlanChange(
                    tenant_id=tenant.id,
                    from_plan="free",
                    to_plan="premium",
                    changed_at=_at("2026-11-16T10:30:00"),
                )
            )
            session.add(
                Credit(tenant_id=tenant.id, amount_usd=Decimal("20.00"), reason="outage, 3 Nov")
            )
            rows = []
            for n in range(3480):
                day = 1 + n % 30
                rows.append(
                    {
                        "id": new_id(),
                        "created_at": _at(f"2026-11-{day:02d}T12:00:00"),
                        "tenant_id": tenant.id,
                        "kind": "chat",
                        "requested_model": "default",
                        "provider": "oai",
                        "model": "gpt-4o-mini",
                        "prompt_tokens": 900,
                        "completion_tokens": 300,
                        "cached_tokens": 0,
                        "cost_usd": 212.40 / 3480,
                        "priced": True,
                        "latency_ms": 800.0,
                        "status": "ok",
                        "fallback_path": [],
                    }
                )
            await store_entries(session, rows)
        billing = BillingSettings(tax_rate=Decimal("0.2"), issuer="Apiary Cloud")
        await billing_service.close_period(runtime.session_factory, "2026-11", billing)
        async with runtime.session_factory() as session:
            invoice = await session.scalar(select(Invoice))
            assert invoice is not None
            lines = (
                await session.scalars(select(InvoiceLine).order_by(InvoiceLine.position))
            ).all()
            pdf = invoice_pdf(invoice, lines, tenant_name="Acme Corp", issuer=billing.issuer)
        await asyncio.to_thread(out.write_bytes, pdf)
        print(f"{invoice.number}: total {invoice.total_minor / 100:.2f} {invoice.currency}")
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
