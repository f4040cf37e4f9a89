"""The usage exports stream from a server-side cursor: JSON Lines beside CSV, a date range
and filters, and memory that does not grow with the rows exported."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from apiary.authz.scope import TenantScope
from apiary.runtime import Runtime
from apiary.usage.service import (
    EXPORT_COLUMNS,
    ExportFormat,
    Window,
    resolve_window,
    usage_service,
)
from tests.factories import make_tenant
from tests.usage.test_usage_api import MARCH, csv_lines, get, insert_rows, ledger_row

pytestmark = pytest.mark.both_databases


async def test_jsonl_export_with_a_range_and_filters(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    key, other_key = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 3, 7, 9, tzinfo=UTC)
    wanted = [
        ledger_row(tenant, at + timedelta(minutes=i), api_key_id=key, model="gpt-4o")
        for i in range(5)
    ]
    await insert_rows(
        runtime,
        [
            *wanted,
            ledger_row(tenant, at, api_key_id=other_key, model="gpt-4o"),  # another key
            ledger_row(tenant, at, api_key_id=key, model="gpt-4o-mini"),  # another model
            ledger_row(tenant, datetime(2026, 4, 2, tzinfo=UTC), api_key_id=key, model="gpt-4o"),
        ],
    )
    params = {**MARCH, "api_key_id": str(key), "model": "gpt-4o"}
    response = await get(client, "export.jsonl", tenant.admin.headers, **params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].endswith('.jsonl"')
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["id"] for line in lines] == [str(row["id"]) for row in wanted]
    first = lines[0]
    assert first["api_key_id"] == str(key)
    assert first["model"] == "gpt-4o"
    assert first["prompt_tokens"] == wanted[0]["prompt_tokens"]
    assert first["cost_usd"] == pytest.approx(wanted[0]["cost_usd"])
    assert datetime.fromisoformat(first["created_at"]) == at

    # The same filters on the CSV export; and one that matches nothing.
    response = await get(client, "export.csv", tenant.admin.headers, **params)
    assert [line["id"] for line in csv_lines(response)] == [str(row["id"]) for row in wanted]
    response = await get(client, "export.csv", tenant.admin.headers, **MARCH, status="error")
    assert csv_lines(response) == []

    bad = await get(client, "export.jsonl", tenant.admin.headers, api_key_id="not-a-uuid")
    assert bad.status_code == 422
    assert "api_key_id" in bad.text


async def _export(
    runtime: Runtime, scope: TenantScope, window: Window, fmt: ExportFormat
) -> tuple[int, int, int]:
    """Lines and bytes of an export, and its peak memory (Python allocations)."""
    size = count = 0
    tracemalloc.start()
    try:
        async for chunk in usage_service.export(
            runtime.session_factory, scope, window, filters={}, fmt=fmt, batch_rows=1000
        ):
            size += len(chunk)
            count += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, size, peak


async def test_export_memory_does_not_grow_with_the_rows(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Exporting 30,000 rows (about 5 MB of CSV, 9 of JSON Lines) takes no more memory
    than exporting 3,000: rows are read from a cursor a batch at a time and sent on."""
    tenant = await make_tenant(runtime, client, "big")
    at = datetime(2026, 3, 3, tzinfo=UTC)
    rows = [ledger_row(tenant, at + timedelta(seconds=i)) for i in range(30_000)]
    for start in range(0, len(rows), 5000):
        await insert_rows(runtime, rows[start : start + 5000])
    small = resolve_window(at, at + timedelta(seconds=3000))
    large = resolve_window(at, at + timedelta(days=1))
    scope = TenantScope(uuid.UUID(tenant.id))
    for fmt in ("csv", "jsonl"):
        await _export(runtime, scope, small, fmt)  # warm: compiled statements, pools
        few, _, few_peak = await _export(runtime, scope, small, fmt)
        many, size, many_peak = await _export(runtime, scope, large, fmt)
        header = fmt == "csv"
        assert (few, many) == (3000 + header, 30_000 + header)
        assert size > 4_000_000
        assert many_peak < 1.5 * few_peak, f"{fmt}: {few_peak} B for 3k rows, {many_peak} for 30k"


async def test_csv_cells_read_the_same_on_every_database(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """On PostgreSQL the database writes the time and the formula guard of each row (SQL),
    on SQLite Python does: the file reads the same either way, cell for cell, as the rows'
    own values written by Python's csv module."""
    tenant = await make_tenant(runtime, client, "cells")
    at = datetime(2026, 3, 9, 14, 5, 7, tzinfo=UTC)
    rows = [
        ledger_row(tenant, at),  # a whole second: isoformat writes no fraction
        ledger_row(tenant, at + timedelta(microseconds=1), status="error", error="-1 quota"),
        ledger_row(tenant, at + timedelta(seconds=1, microseconds=250_000), cost_usd=None),
        *(
            ledger_row(tenant, at + timedelta(seconds=2 + i), requested_model=f"{start}x")
            for i, start in enumerate(["=", "+", "-", "@", "\t", "\r", "a", "'"])
        ),
        ledger_row(tenant, at + timedelta(seconds=20), route="=cmd|' /C calc'!A0", cache_hit=True),
    ]
    await insert_rows(runtime, rows)

    response = await get(client, "export.csv", tenant.admin.headers, **MARCH)
    assert response.status_code == 200
    header, *cells = list(csv.reader(io.StringIO(response.text, newline="")))
    assert tuple(header) == EXPORT_COLUMNS

    def written(row: dict[str, Any]) -> list[str]:
        values: list[Any] = [row[name] for name in EXPORT_COLUMNS]
        values[0] = row["created_at"].isoformat()
        for name in ("kind", "status", "requested_model", "route", "provider", "model", "error"):
            value = row[name]
            if value and value[0] in "=+-@\t\r":
                values[EXPORT_COLUMNS.index(name)] = "'" + value
        return next(csv.reader(io.StringIO(_csv_line(values), newline="")))

    assert cells == [written(row) for row in rows]
    assert cells[0][0] == "2026-03-09T14:05:07+00:00"
    assert cells[1][0] == "2026-03-09T14:05:07.000001+00:00"
    assert cells[1][-1] == "'-1 quota"
    assert [line[4] for line in cells[3:11]] == [
        "'=x",
        "'+x",
        "'-x",
        "'@x",
        "'\tx",
        "'\rx",
        "ax",
        "'x",
    ]


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()
