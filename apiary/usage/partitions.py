"""Monthly partitions of `ledger_entries` on PostgreSQL (migration 0016 makes the table
partitioned by RANGE (created_at)); SQLite keeps one plain table and needs none of this.

Partitions are created ahead (`ensure_ahead`: this month and the next two, at start-up and
by `apiary usage maintain`) and on write: the ledger writer checks each batch's months
against the ones it knows exist, so a batch never fails for want of a partition. Retention
drops whole partitions (`drop_before`), which frees their space at once, unlike a DELETE.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("apiary.ledger")

PARENT = "ledger_entries"
_NAME = re.compile(r"^ledger_entries_(\d{4})_(\d{2})$")


def is_partition(name: str | None) -> bool:
    """Whether a table name is one of the ledger's monthly partitions (which are made at run
    time, so autogenerate and schema comparisons leave them out)."""
    return bool(name and _NAME.match(name))


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's `include_name` hook: everything but the ledger's partitions."""
    return not (type_ == "table" and is_partition(name))


def month_of(moment: dt.datetime) -> dt.date:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return dt.date(moment.year, moment.month, 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partition_name(month: dt.date) -> str:
    return f"{PARENT}_{month:%Y_%m}"


def create_sql(month: dt.date) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
        f"TO ('{next_month(month).isoformat()} 00:00:00+00')"
    )


async def is_partitioned(connection: AsyncConnection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    found = await connection.scalar(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
        ),
        {"name": PARENT},
    )
    return found is not None


async def existing(connection: AsyncConnection) -> dict[dt.date, str]:
    """The months that have a partition, and their tables' names."""
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :name "
            "AND pg_table_is_visible(p.oid)"
        ),
        {"name": PARENT},
    )
    months: dict[dt.date, str] = {}
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            months[dt.date(int(match[1]), int(match[2]), 1)] = name
    return months


async def ensure(connection: AsyncConnection, months: Iterable[dt.date]) -> None:
    """Create the months' partitions that are missing (another replica may race us: its
    CREATE wins and ours is a no-op or a duplicate error, both fine)."""
    for month in sorted(set(months)):
        try:
            async with connection.begin_nested():
                await connection.execute(text(create_sql(month)))
        except DBAPIError as error:
            if "already exists" not in str(error):
                raise


async def ensure_ahead(connection: AsyncConnection, now: dt.datetime, *, months: int = 3) -> None:
    month = month_of(now)
    wanted = []
    for _ in range(months):
        wanted.append(month)
        month = next_month(month)
    await ensure(connection, wanted)


async def drop_before(connection: AsyncConnection, cutoff: dt.datetime) -> list[str]:
    """Drop the partitions whose every possible row is older than `cutoff`."""
    dropped = []
    for month, name in sorted((await existing(connection)).items()):
        end = dt.datetime.combine(next_month(month), dt.time(), dt.UTC)
        if end <= cutoff:
            await connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
            dropped.append(name)
    if dropped:
        log.info("ledger partitions dropped past retention: %s", ", ".join(dropped))
    return dropped
