"""Usage reports at the plan's scale (issue 23): a month of ledger rows, read from the
rollups and, side by side in the same run, by a scan of the raw rows.

    PYTHONPATH=. .venv/bin/python bench/usage.py --postgres URL [--rows 30000000]
        [--sqlite-rows 3000000] [--repeat 20]

URL is a PostgreSQL server the script may create a database on (e.g. the one
`scripts/services.sh` starts); without --postgres only SQLite runs. The load is a bulk path:
rows generated in Python (100 tenants with Zipf-skewed volumes, 3-6 of 20 models each, 1-5
API keys each used directly and by 0-2 agents, each caller on one route, calls spread evenly
over November 2026; one model is an embedding model, one has no price) and COPYed into the
partitioned ledger, with their rollups summed in Python as they are made and COPYed too:
the same rows the ledger writer would have stored. Foreign-key checks are skipped during the COPY
(`session_replication_role = replica`; the rows' tenants exist). SQLite gets its rows via
executemany (--sqlite-rows, 0 to skip).

Then, for the busiest tenant and for the whole platform (no tenant: the super admin's view),
each report (`summary` = totals by kind, and `series` grouped by day, model, provider,
route, api_key and agent) over the month: p50/p95 from the rollups (--repeat runs) and from a
raw scan (fewer runs: it takes seconds); and the busiest tenant's month as a CSV export
streamed from the server-side cursor: rows per second and the process's peak RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from apiary import migrations
from apiary.authz.scope import TenantScope
from apiary.db import create_engine, create_session_factory
from apiary.tenants.models import Tenant
from apiary.usage import partitions, rollups
from apiary.usage.models import LedgerEntry, LedgerRollup
from apiary.usage.repository import usage_repository
from apiary.usage.schemas import UsageDimension
from apiary.usage.service import Window, usage_service

MONTH = (dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
TENANTS = 100
MODELS = [(f"provider-{i % 5}", f"model-{i:02d}") for i in range(20)]
CHUNK = 100_000

ENTRY_COLUMNS = [c.name for c in LedgerEntry.__table__.columns]
ROLLUP_COLUMNS = [c.name for c in LedgerRollup.__table__.columns]


class World:
    """The tenants, their keys, agents and models, and how busy each is (Zipf, s = 1.1)."""

    def __init__(self, rng: random.Random) -> None:
        self.tenants = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(TENANTS)]
        weights = [1 / (rank + 1) ** 1.1 for rank in range(TENANTS)]
        total = sum(weights)
        self.share = [w / total for w in weights]
        # Who calls: 1-5 API keys, each used directly and by 0-2 agents of its own, each
        # caller always through the same route (or none).
        self.callers: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID | None, str | None]]] = {}
        for tenant in self.tenants:
            callers = []
            for _ in range(rng.randint(1, 5)):
                key = uuid.UUID(int=rng.getrandbits(128))
                agents = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(rng.randint(0, 2))]
                for agent in [None, *agents]:
                    callers.append((key, agent, rng.choice([None, "default", "cheap"])))
            self.callers[tenant] = callers
        self.models = {t: rng.sample(MODELS, rng.randint(3, 6)) for t in self.tenants}


def generate(
    world: World, rows: int, seed: int
) -> Iterator[tuple[list[tuple[Any, ...]], dict[tuple[Any, ...], list[Any]]]]:
    """Chunks of ledger rows (tuples in ENTRY_COLUMNS order) and the chunk's rollup sums."""
    rng = random.Random(seed)
    span = (MONTH[1] - MONTH[0]).total_seconds()
    tenant_of = rng.choices(range(TENANTS), weights=world.share, k=min(rows, 1_000_000))
    id_base = rng.getrandbits(64) << 64
    made = 0
    while made < rows:
        count = min(CHUNK, rows - made)
        chunk: list[tuple[Any, ...]] = []
        sums: dict[tuple[Any, ...], list[Any]] = {}
        for i in range(count):
            n = made + i
            tenant = world.tenants[tenant_of[n % len(tenant_of)]]
            at = MONTH[0] + dt.timedelta(seconds=span * n / rows)
            bits = rng.getrandbits(32)  # one draw, sliced for each choice
            models = world.models[tenant]
            provider, model = models[bits % len(models)]
            callers = world.callers[tenant]
            key, agent, route = callers[(bits >> 4) % len(callers)]
            # A model's kind and whether it has a price are the model's own.
            kind = "embedding" if model == "model-00" else "chat"
            prompt = 50 + (bits >> 12) % 3950
            completion = 0 if kind == "embedding" else 10 + (bits >> 22) % 790
            cache_hit = n % 10 == 0
            cached = prompt // 2 if n % 7 == 0 else 0
            priced = model != "model-19"
            cost = (prompt * 0.15 + completion * 0.6) / 1e6 if priced else None
            saved = 0.0004 if cache_hit else 0.0
            status = "error" if n % 97 == 0 else "ok"
            chunk.append(
                (
                    key,
                    None,
                    None,
                    agent,
                    kind,
                    model,
                    route,
                    "explicit",
                    provider,
                    model,
                    prompt,
                    completion,
                    cached,
                    False,
                    cost,
                    priced,
                    cache_hit,
                    saved,
                    120.0,
                    None,
                    "[]",
                    status,
                    "boom" if status == "error" else None,
                    False,
                    uuid.UUID(int=id_base + n),
                    at,
                    tenant,
                )
            )
            # Summed per hour here; days and months are summed from the hours at the end.
            slot_key = (
                tenant,
                at.replace(minute=0, second=0, microsecond=0),
                (kind, priced, cache_hit, model, provider, route, key, agent),
            )
            slot = sums.get(slot_key)
            if slot is None:
                slot = sums[slot_key] = [0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0.0]
            slot[0] += 1
            slot[1] += status != "ok"
            slot[2] += prompt
            slot[3] += completion
            slot[4] += cached
            slot[5] += cached  # never above prompt here
            slot[6] += cost or 0.0
            slot[7] += not priced
            slot[8] += cache_hit
            slot[9] += saved
        made += count
        yield chunk, sums


def merge(total: dict[tuple[Any, ...], list[Any]], part: dict[tuple[Any, ...], list[Any]]) -> None:
    for key, values in part.items():
        known = total.get(key)
        if known is None:
            total[key] = values
        else:
            for index, value in enumerate(values):
                known[index] += value


def rollup_records(hours: dict[tuple[Any, ...], list[Any]]) -> list[tuple[Any, ...]]:
    """Rollup rows for every period from the hour sums, in ROLLUP_COLUMNS order."""
    periods: dict[tuple[Any, ...], list[Any]] = {}
    for (tenant, hour, dims), values in hours.items():
        day = hour.replace(hour=0)
        for period, bucket in (("hour", hour), ("day", day), ("month", day.replace(day=1))):
            merge(periods, {(tenant, period, bucket, dims): list(values)})
    records = []
    for (tenant, period, bucket, dims), values in periods.items():
        row = {
            "tenant_id": tenant,
            "period": period,
            "bucket_start": bucket,
            "dims": rollups.dims_key(dims),
            **dict(zip(rollups.DIMENSIONS, dims, strict=True)),
            **dict(zip(rollups.MEASURES, values, strict=True)),
        }
        records.append(tuple(row[name] for name in ROLLUP_COLUMNS))
    return records


def assert_columns() -> None:
    expected = [
        "api_key_id",
        "user_id",
        "execution_id",
        "agent_id",
        "kind",
        "requested_model",
        "route",
        "reason",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "tokens_estimated",
        "cost_usd",
        "priced",
        "cache_hit",
        "saved_usd",
        "latency_ms",
        "ttft_ms",
        "fallback_path",
        "status",
        "error",
        "streamed",
        "id",
        "created_at",
        "tenant_id",
    ]
    assert expected == ENTRY_COLUMNS, ENTRY_COLUMNS


async def seed_tenants(url: str, world: World) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(Tenant),
                [
                    {
                        "id": tenant,
                        "name": f"bench-{index}",
                        "plan": "enterprise",
                        "created_at": MONTH[0],
                    }
                    for index, tenant in enumerate(world.tenants)
                ],
            )
    finally:
        await engine.dispose()


async def load_postgres(url: str, world: World, rows: int) -> float:
    import asyncpg  # the COPY protocol, beneath SQLAlchemy

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    started = time.perf_counter()
    try:
        for month in (partitions.month_of(MONTH[0]),):
            await connection.execute(partitions.create_sql(month))
        await connection.execute("SET session_replication_role = replica")
        total: dict[tuple[Any, ...], list[Any]] = {}
        for done, (chunk, sums) in enumerate(generate(world, rows, seed=1), start=1):
            await connection.copy_records_to_table(
                "ledger_entries", records=chunk, columns=ENTRY_COLUMNS
            )
            merge(total, sums)
            if done % 20 == 0:
                print(
                    f"  {done * CHUNK:,} rows in {time.perf_counter() - started:.0f} s", flush=True
                )
        await connection.copy_records_to_table(
            "ledger_rollups", records=rollup_records(total), columns=ROLLUP_COLUMNS
        )
        await connection.execute("ANALYZE ledger_entries")
        await connection.execute("ANALYZE ledger_rollups")
    finally:
        await connection.close()
    return time.perf_counter() - started


def load_sqlite(url: str, world: World, rows: int) -> float:
    engine = create_sync_engine(url.replace("+aiosqlite", ""))
    started = time.perf_counter()
    total: dict[tuple[Any, ...], list[Any]] = {}
    with engine.begin() as connection:
        for chunk, sums in generate(world, rows, seed=1):
            connection.execute(
                insert(LedgerEntry.__table__),  # type: ignore[arg-type]
                [
                    dict(zip(ENTRY_COLUMNS, row, strict=True)) | {"fallback_path": []}
                    for row in chunk
                ],
            )
            merge(total, sums)
        connection.execute(
            insert(LedgerRollup.__table__),  # type: ignore[arg-type]
            [dict(zip(ROLLUP_COLUMNS, row, strict=True)) for row in rollup_records(total)],
        )
    engine.dispose()
    return time.perf_counter() - started


async def timed(run: Callable[[], Awaitable[object]], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50_ms": statistics.median(times), "p95_ms": p95, "runs": len(times)}


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(url: str, world: World, *, repeat: int, raw_repeat: int) -> dict[str, Any]:
    engine = create_engine(url)
    factory = create_session_factory(engine)
    busiest = TenantScope(world.tenants[0])
    reports: dict[str, Any] = {}
    try:
        for who, scope in (("tenant", busiest), ("platform", None)):
            for report in ("summary", *(d.value for d in UsageDimension)):
                cell: dict[str, Any] = {}
                for source, runs in (("rollups", repeat), ("raw", raw_repeat)):
                    raw = source == "raw"

                    async def run(
                        report: str = report, raw: bool = raw, scope: Any = scope
                    ) -> object:
                        async with factory() as session:
                            if report == "summary":
                                return await usage_repository.totals_by_kind(
                                    session, scope, start=MONTH[0], end=MONTH[1], raw_only=raw
                                )
                            return await usage_repository.series(
                                session,
                                scope,
                                start=MONTH[0],
                                end=MONTH[1],
                                group_by=UsageDimension(report),
                                by_day=False,
                                raw_only=raw,
                            )

                    await run()  # warm
                    cell[source] = await timed(run, runs)
                reports[f"{who} {report}"] = cell
                print(
                    f"  {who:8} {report:9} rollups p95 {cell['rollups']['p95_ms']:8.1f} ms"
                    f"   raw scan p95 {cell['raw']['p95_ms']:9.1f} ms",
                    flush=True,
                )
        # The busiest tenant's month, streamed as CSV into nothing.
        Path("/proc/self/clear_refs").write_text("5")  # noqa: ASYNC240  (resets the peak RSS mark)
        before = _rss_kib()
        started = time.perf_counter()
        count = 0
        size = 0
        async for chunk in usage_service.export(
            factory, busiest, Window(*MONTH), filters={}, fmt="csv"
        ):
            count += chunk.count(b"\n")
            size += len(chunk)
        seconds = time.perf_counter() - started
        reports["export"] = {
            "rows": count - 1,
            "bytes": size,
            "seconds": seconds,
            "rows_per_s": (count - 1) / seconds,
            "peak_rss_growth_mib": (_peak_rss_kib() - before) / 1024,
        }
        print(f"  export: {reports['export']}", flush=True)
    finally:
        await engine.dispose()
    return reports


async def fresh_postgres(admin_url: str) -> str:
    name = f"apiary_bench_usage_{secrets.token_hex(3)}"
    engine = create_engine(admin_url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres(admin_url: str, url: str) -> None:
    engine = create_engine(admin_url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            name = make_url(url).database
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL to create the bench database on")
    parser.add_argument("--rows", type=int, default=30_000_000)
    parser.add_argument("--sqlite-rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--raw-repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    assert_columns()
    world = World(random.Random(23))
    results: dict[str, Any] = {"rows": args.rows, "sqlite_rows": args.sqlite_rows}
    if args.postgres:
        url = await fresh_postgres(args.postgres)
        try:
            await asyncio.to_thread(migrations.upgrade, url)
            await seed_tenants(url, world)
            print(f"PostgreSQL: loading {args.rows:,} rows", flush=True)
            seconds = await load_postgres(url, world, args.rows)
            print(f"  loaded in {seconds:.0f} s ({args.rows / seconds:,.0f} rows/s)", flush=True)
            results["postgres"] = {"load_s": seconds}
            results["postgres"] |= await measure(
                url, world, repeat=args.repeat, raw_repeat=args.raw_repeat
            )
        finally:
            if not args.keep:
                await drop_postgres(args.postgres, url)
    if args.sqlite_rows:
        directory = Path(tempfile.mkdtemp(prefix="apiary-bench-usage-"))
        url = f"sqlite+aiosqlite:///{directory / 'apiary.db'}"
        try:
            await asyncio.to_thread(migrations.upgrade, url)
            await seed_tenants(url, world)
            print(f"SQLite: loading {args.sqlite_rows:,} rows", flush=True)
            seconds = await asyncio.to_thread(load_sqlite, url, world, args.sqlite_rows)
            print(f"  loaded in {seconds:.0f} s", flush=True)
            results["sqlite"] = {"load_s": seconds}
            results["sqlite"] |= await measure(
                url, world, repeat=args.repeat, raw_repeat=args.raw_repeat
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, directory)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    asyncio.run(main())
