"""Migrations on a brand-new database: up to head, down to nothing, up again, and a schema
that matches the ORM models exactly (a model change without its migration fails here).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncSession

from apiary import migrations
from apiary.db import create_engine
from apiary.models import Base
from apiary.usage import partitions
from apiary.usage.schemas import UsageDimension

pytestmark = pytest.mark.both_databases

TEST_DATABASE = os.environ.get("APIARY_TEST_DATABASE_URL", "sqlite") or "sqlite"
APP_TABLES = frozenset(Base.metadata.tables)


async def _admin_execute(sql: str) -> None:
    engine = create_engine(TEST_DATABASE)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.fixture
async def blank_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database nobody has touched: no tables, no alembic_version."""
    if TEST_DATABASE == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"
        return
    name = f"apiary_m_{secrets.token_hex(4)}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(TEST_DATABASE).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names: list[str] = await connection.run_sync(
                lambda sync: inspect(sync).get_table_names()
            )
            return {name for name in names if not partitions.is_partition(name)}
    finally:
        await engine.dispose()


async def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            revision: str | None = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
            return revision
    finally:
        await engine.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(migrations.alembic_config("unused")).get_current_head()
    assert head is not None
    return head


async def test_upgrade_downgrade_and_upgrade_again(blank_url: str) -> None:
    assert await _tables(blank_url) == set()

    await asyncio.to_thread(migrations.upgrade, blank_url)
    assert await _tables(blank_url) == APP_TABLES | {"alembic_version"}
    assert await _revision(blank_url) == _head()

    await asyncio.to_thread(migrations.downgrade, blank_url, "base")
    assert not (await _tables(blank_url)) & APP_TABLES
    assert await _revision(blank_url) is None

    # Down to nothing must leave nothing behind (types, indexes) that blocks the way back up.
    await asyncio.to_thread(migrations.upgrade, blank_url)
    assert await _tables(blank_url) == APP_TABLES | {"alembic_version"}
    assert await _revision(blank_url) == _head()


async def test_upgrade_twice_is_a_no_op(blank_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, blank_url)
    await asyncio.to_thread(migrations.upgrade, blank_url)
    assert await _tables(blank_url) == APP_TABLES | {"alembic_version"}


async def test_migrated_schema_matches_the_models(blank_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, blank_url)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": partitions.include_name}
        )
        found: list[object] = compare_metadata(context, Base.metadata)
        return found

    engine = create_engine(blank_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await engine.dispose()
    assert diff == [], "models and migrations disagree; generate a migration:\n" + "\n".join(
        map(repr, diff)
    )


def test_the_known_revisions_are_alembics_chain() -> None:
    # /readyz reads the chain from the version files without importing Alembic.
    script = ScriptDirectory.from_config(migrations.alembic_config(""))
    assert migrations.revisions() == tuple(r.revision for r in script.walk_revisions())
    assert migrations.revisions()[0] == script.get_current_head()


def test_serving_does_not_import_alembic() -> None:
    # Alembic and Mako cost a serving process about 12 MiB; only migrating needs them.
    probe = (
        "import sys; from apiary.main import create_app; from apiary.config import Settings;"
        "from apiary import migrations; create_app(Settings(environment='test'));"
        "migrations.revisions(); print('alembic' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


async def test_0016_keeps_the_ledger_s_rows_and_rolls_them_up(blank_url: str) -> None:
    """A ledger written before 0016 keeps every row through the upgrade (on PostgreSQL
    into monthly partitions), its rollups are filled from them, and the downgrade keeps the
    rows too."""
    from types import SimpleNamespace
    from typing import cast

    from apiary.authz.scope import TenantScope
    from apiary.tenants.models import Tenant
    from apiary.usage.models import LedgerEntry
    from apiary.usage.repository import usage_repository
    from tests.factories import TenantFixture
    from tests.usage.test_usage_api import ledger_row

    await asyncio.to_thread(migrations.upgrade, blank_url, "0015")
    tenant = uuid.uuid4()
    fixture = cast(TenantFixture, SimpleNamespace(id=str(tenant)))
    start = dt.datetime(2026, 9, 30, 22, 15, tzinfo=dt.UTC)
    rows = [ledger_row(fixture, start + dt.timedelta(minutes=7 * i)) for i in range(60)]
    engine = create_engine(blank_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(Tenant),
                {
                    "id": tenant,
                    "name": "before-0016",
                    "status": "active",
                    "plan": "free",
                    "currency": "USD",
                    "created_at": start,
                },
            )
            await connection.execute(insert(LedgerEntry), rows)
    finally:
        await engine.dispose()

    await asyncio.to_thread(migrations.upgrade, blank_url)

    window = (dt.datetime(2026, 9, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    engine = create_engine(blank_url)
    try:
        async with AsyncSession(engine) as session:
            count = await session.scalar(select(func.count()).select_from(LedgerEntry))
            assert count == 60
            scope = TenantScope(tenant)
            rolled = await usage_repository.series(
                session,
                scope,
                start=window[0],
                end=window[1],
                group_by=UsageDimension.DAY,
                by_day=False,
            )
            raw = await usage_repository.series(
                session,
                scope,
                start=window[0],
                end=window[1],
                group_by=UsageDimension.DAY,
                by_day=False,
                raw_only=True,
            )
            assert [(r.key, r.totals.calls) for r in rolled] == [
                (r.key, r.totals.calls) for r in raw
            ]
            assert sum(r.totals.calls for r in rolled) == 60
            if engine.dialect.name == "postgresql":
                kind = await session.scalar(
                    text("SELECT relkind::text FROM pg_class WHERE relname = 'ledger_entries'")
                )
                assert kind == "p"  # partitioned
                children = await session.scalar(text("SELECT count(*) FROM ledger_entries_2026_09"))
                assert children == 15  # 22:15 to 23:53 on September 30th, every 7 minutes
    finally:
        await engine.dispose()

    await asyncio.to_thread(migrations.downgrade, blank_url, "0015")
    engine = create_engine(blank_url)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM ledger_entries")) == 60
    finally:
        await engine.dispose()
