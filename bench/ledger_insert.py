"""Ledger inserts: what the rows' id scheme costs the database, random vs time-ordered.

Every gateway call adds a ledger row, so on a busy embedded gateway (SQLite, in the
gateway's own process and core) the insert is part of each call's CPU. A row's primary key
used to be a random UUIDv4, which lands at a random place in the primary-key index; a
time-ordered UUIDv7 (`apiary.db.new_id`) lands at its end. For each scheme this script
builds a ledger already holding `--prefill` rows of that scheme (a gateway's ledger is
not empty), then writes `--rows` more through the real `LedgerWriter` in batches of
`--batch` (as the writer's background flush does under load), in alternating rounds, and
prints the CPU per row of this process (SQLite works in it, aiosqlite's thread included)
and the wall time per row, and their ratios.

    .venv/bin/python bench/ledger_insert.py                      # SQLite
    .venv/bin/python bench/ledger_insert.py --postgres URL       # also PostgreSQL (wall time:
                                                                 # its CPU is its server's)

The PostgreSQL URL needs an empty database of its own: the script creates the tables,
and drops them when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiary import models  # noqa: F401 - every table, so foreign keys resolve
from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.db import Base, create_engine, create_session_factory, new_id, session_scope
from apiary.gateway.providers.base import Usage
from apiary.tenants.models import Tenant
from apiary.usage.ledger import LedgerWriter, ledger_row

SCHEMES: dict[str, Callable[[], uuid.UUID]] = {"uuid4": uuid.uuid4, "uuid7": new_id}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefill", type=int, default=200_000, help="rows already stored")
    parser.add_argument("--rows", type=int, default=20_000, help="rows measured per round")
    parser.add_argument(
        "--batch", type=int, default=500, help="rows per flush (the writer's batch)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scheme, alternating")
    parser.add_argument("--postgres", help="also measure on this (empty) PostgreSQL database")
    return parser.parse_args(argv)


def entries(
    auth: AuthContext, count: int, make_id: Callable[[], uuid.UUID]
) -> list[dict[str, Any]]:
    usage = Usage(prompt_tokens=20, completion_tokens=8, cached_tokens=0)
    body = {"model": "fake/gpt-4o-mini"}
    rows = []
    for _ in range(count):
        row = ledger_row(
            auth,
            body,
            kind="chat",
            route=None,
            reason="explicit model",
            provider="fake",
            model="gpt-4o-mini",
            usage=usage,
            cost_usd=0.0000123,
            latency_s=0.004,
        )
        row["id"] = make_id()
        rows.append(row)
    return rows


class Ledger:
    """One database holding a ledger of one id scheme, and a writer for it."""

    def __init__(self, url: str, make_id: Callable[[], uuid.UUID]) -> None:
        self.engine = create_engine(url)
        self.factory = create_session_factory(self.engine)
        self.make_id = make_id
        self.auth: AuthContext | None = None

    async def create(self, prefill: int) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.run_sync(Base.metadata.create_all)
        async with session_scope(self.factory) as session:
            tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
            session.add(tenant)
        self.auth = AuthContext(role=Role.DEVELOPER, tenant_id=tenant.id, actor=Actor())
        await self.write(prefill, batch=1000)

    async def write(self, count: int, *, batch: int) -> tuple[float, float]:
        """Write `count` rows in flushes of `batch`; CPU and wall seconds per row."""
        assert self.auth is not None
        rows = entries(self.auth, count, self.make_id)
        writer = LedgerWriter(self.factory, batch_size=batch)
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, count, batch):
            for row in rows[start : start + batch]:
                writer.record(row)
            await writer.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if writer.written != count:
            raise RuntimeError(f"wrote {writer.written} of {count} rows")
        return cpu / count, wall / count

    async def drop(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await self.engine.dispose()


async def measure(
    name: str, urls: dict[str, str], args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    ledgers = {scheme: Ledger(url, SCHEMES[scheme]) for scheme, url in urls.items()}
    for scheme, ledger in ledgers.items():
        print(f"{name}: {scheme}, storing {args.prefill:,} rows first", flush=True)
        await ledger.create(args.prefill)
    samples: dict[str, list[tuple[float, float]]] = {scheme: [] for scheme in ledgers}
    for round_ in range(args.rounds):
        for scheme, ledger in ledgers.items():
            cpu, wall = await ledger.write(args.rows, batch=args.batch)
            samples[scheme].append((cpu, wall))
            print(
                f"  round {round_ + 1} {scheme}: {cpu * 1e6:.1f} µs CPU, "
                f"{wall * 1e6:.1f} µs wall per row",
                flush=True,
            )
    for ledger in ledgers.values():
        await ledger.drop()
    return {
        scheme: (
            statistics.median(cpu for cpu, _ in rows),
            statistics.median(wall for _, wall in rows),
        )
        for scheme, rows in samples.items()
    }


def report(name: str, figures: dict[str, tuple[float, float]]) -> None:
    (cpu4, wall4), (cpu7, wall7) = figures["uuid4"], figures["uuid7"]
    print(f"\n{name}, median per row: CPU / wall")
    print(f"  uuid4 (random)       {cpu4 * 1e6:7.1f} µs  {wall4 * 1e6:7.1f} µs")
    print(f"  uuid7 (time-ordered) {cpu7 * 1e6:7.1f} µs  {wall7 * 1e6:7.1f} µs")
    print(f"  uuid4 / uuid7        {cpu4 / cpu7:7.2f}x    {wall4 / wall7:7.2f}x\n")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="apiary-ledger-") as tmp:
        urls = {scheme: f"sqlite+aiosqlite:///{tmp}/{scheme}.db" for scheme in SCHEMES}
        report("SQLite", await measure("SQLite", urls, args))
    if args.postgres:
        # One database, so the schemes take turns: each builds its own table afresh.
        for scheme in SCHEMES:
            figures = await measure("PostgreSQL", {scheme: args.postgres}, args)
            print(f"PostgreSQL {scheme}: {figures[scheme][1] * 1e6:.1f} µs wall per row\n")


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(main_async(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
