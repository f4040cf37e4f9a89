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
import uuid
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
    """The rollup rows (hour, day and month) that add `entries` (ledger rows as dicts), sorted."""
    sums: dict[tuple[uuid.UUID, str, dt.datetime, str], dict[str, Any]] = {}
    for entry in entries:
        hour = hour_of(entry["created_at"])
        dims = tuple(entry[name] for name in DIMENSIONS)
        key = dims_key(dims)
        priced = bool(entry["priced"])
        cost = entry["cost_usd"] if priced and entry["cost_usd"] is not None else 0.0
        day = hour.replace(hour=0)
        for period, bucket in ((HOUR, hour), (DAY, day), (MONTH, day.replace(day=1))):
            row = sums.get((entry["tenant_id"], period, bucket, key))
            if row is None:
                row = {
                    "tenant_id": entry["tenant_id"],
                    "period": period,
                    "bucket_start": bucket,
                    "dims": key,
                    **dict(zip(DIMENSIONS, dims, strict=True)),
                    **dict.fromkeys(MEASURES, 0),
                    "cost_usd": 0.0,
                    "saved_usd": 0.0,
                }
                sums[(entry["tenant_id"], period, bucket, key)] = row
            row["calls"] += 1
            row["errors"] += entry["status"] != "ok"
            row["prompt_tokens"] += int(entry["prompt_tokens"])
            row["completion_tokens"] += int(entry["completion_tokens"])
            row["cached_tokens"] += int(entry["cached_tokens"])
            row["billable_cached_tokens"] += _billable_cached(entry)
            row["cost_usd"] += float(cost)
            row["unpriced_calls"] += not priced
            row["cache_hits"] += bool(entry["cache_hit"])
            row["saved_usd"] += float(entry["saved_usd"] or 0.0)
    return [sums[key] for key in sorted(sums, key=lambda k: (str(k[0]), k[1], k[2], k[3]))]


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
