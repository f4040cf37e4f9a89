"""Rollups of the ledger: each batch of entries summed in Python per tenant, hour (and UTC
day and month) and dimensions, then added to `ledger_rollups` with one upsert per batch, inside the
batch's own transaction. The hot path (`LedgerWriter.record`) does nothing more; a batch of
500 entries usually collapses to a few dozen rollup rows.

Upserts add to the stored sums (ON CONFLICT DO UPDATE SET calls = calls + excluded.calls),
so two replicas' writers, or an entry written late into a past hour, simply add theirs. The
rows are sorted by key so two concurrent transactions lock them in the same order (no
deadlock on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from apiary.usage.models import LedgerRollup

DIMENSIONS = ("kind", "priced", "cache_hit", "model", "provider", "route", "api_key_id", "agent_id")
MEASURES = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "billable_cached_tokens",
    "cost_usd",
    "unpriced_calls",
    "cache_hits",
    "saved_usd",
)
HOUR, DAY, MONTH = "hour", "day", "month"

_statements: dict[str, Insert] = {}


def dims_key(values: Iterable[object]) -> str:
    """A digest of the dimension values, the rollup row's identity within its bucket."""
    text = "\x1f".join("\x00" if value is None else str(value) for value in values)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def hour_of(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    else:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _billable_cached(entry: Mapping[str, Any]) -> int:
    cached, prompt = int(entry["cached_tokens"]), int(entry["prompt_tokens"])
    return 0 if cached < 0 else min(cached, prompt)


def aggregate(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rollup rows (hour, day and month) that add `entries` (ledger rows as dicts),
    sorted. Each entry is added once, to its hour; days and months are summed from the
    batch's hours (a few dozen), and each distinct dimension tuple is digested once."""
    hours: dict[tuple[Any, ...], list[Any]] = {}
    for entry in entries:
        priced = bool(entry["priced"])
        dims = (
            entry["kind"],
            priced,
            bool(entry["cache_hit"]),
            entry["model"],
            entry["provider"],
            entry["route"],
            entry["api_key_id"],
            entry["agent_id"],
        )
        key = (entry["tenant_id"], hour_of(entry["created_at"]), dims)
        sums = hours.get(key)
        if sums is None:
            sums = hours[key] = [0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0.0]
        cost = entry["cost_usd"]
        sums[0] += 1
        sums[1] += entry["status"] != "ok"
        sums[2] += int(entry["prompt_tokens"])
        sums[3] += int(entry["completion_tokens"])
        sums[4] += int(entry["cached_tokens"])
        sums[5] += _billable_cached(entry)
        sums[6] += float(cost) if priced and cost is not None else 0.0
        sums[7] += not priced
        sums[8] += dims[2]
        sums[9] += float(entry["saved_usd"] or 0.0)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    digests: dict[tuple[Any, ...], str] = {}
    for (tenant, hour, dims), sums in hours.items():
        digest = digests.get(dims)
        if digest is None:
            digest = digests[dims] = dims_key(dims)
        day = hour.replace(hour=0)
        for period, bucket in ((HOUR, hour), (DAY, day), (MONTH, day.replace(day=1))):
            row = rows.get((tenant, period, bucket, digest))
            if row is None:
                rows[(tenant, period, bucket, digest)] = {
                    "tenant_id": tenant,
                    "period": period,
                    "bucket_start": bucket,
                    "dims": digest,
                    **dict(zip(DIMENSIONS, dims, strict=True)),
                    **dict(zip(MEASURES, sums, strict=True)),
                }
            else:
                for name, value in zip(MEASURES, sums, strict=True):
                    row[name] += value
    return [rows[key] for key in sorted(rows, key=lambda k: (str(k[0]), k[1], k[2], k[3]))]


def upsert(dialect: Dialect) -> Insert:
    """The INSERT ... ON CONFLICT DO UPDATE adding a rollup row's sums (one per dialect)."""
    cached = _statements.get(dialect.name)
    if cached is not None:
        return cached
    table = LedgerRollup.__table__
    module: Any = postgresql if dialect.name == "postgresql" else sqlite
    base = module.insert(table)
    statement: Insert = base.on_conflict_do_update(
        index_elements=["tenant_id", "period", "bucket_start", "dims"],
        set_={name: table.c[name] + base.excluded[name] for name in MEASURES},
    )
    _statements[dialect.name] = statement
    return statement
