"""Backdate a tenant's creation for the end-to-end tests: `python backdate_tenant.py NAME`.

Invoices are issued only for ended months in which the tenant existed, and the harness
creates its tenant today; moving its creation to the first of last month gives the tests a
whole ended month to close through the API (POST /api/v1/admin/billing/close).
Nothing else about the tenant changes. Reads the same settings (APIARY_DATA_DIR, ...) as
`apiary serve`."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

from sqlalchemy import update

from apiary.config import Settings
from apiary.db import session_scope, utcnow
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant


async def main(name: str) -> None:
    now = utcnow()
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    created = (first - dt.timedelta(days=1)).replace(day=1)  # the first of last month
    runtime = Runtime.build(Settings())
    try:
        async with session_scope(runtime.session_factory) as session:
            result = await session.execute(
                update(Tenant).where(Tenant.name == name).values(created_at=created)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise SystemExit(f"no tenant named {name!r}")
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
