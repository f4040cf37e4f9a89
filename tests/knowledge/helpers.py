"""Helpers for the knowledge tests: a knowledge base through the API, uploads, waiting."""

from __future__ import annotations

from typing import Any

import httpx

from apiary.runtime import Runtime
from tests.factories import Caller

BASES = "/api/v1/knowledge-bases"


async def create_base(
    client: httpx.AsyncClient, caller: Caller, name: str = "handbook", **fields: Any
) -> dict[str, Any]:
    response = await client.post(BASES, headers=caller.headers, json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def upload(
    client: httpx.AsyncClient,
    caller: Caller,
    kb_id: str,
    filename: str,
    content: bytes,
    *,
    expect: int = 201,
) -> dict[str, Any]:
    response = await client.post(
        f"{BASES}/{kb_id}/documents",
        headers=caller.headers,
        files={"file": (filename, content, "application/octet-stream")},
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def ingested(runtime: Runtime) -> None:
    """Wait until every queued ingestion job has run."""
    await runtime.ingestion.join()


async def search(
    client: httpx.AsyncClient, caller: Caller, kb_id: str, query: str, **options: Any
) -> list[dict[str, Any]]:
    response = await client.post(
        f"{BASES}/{kb_id}/search", headers=caller.headers, json={"query": query, **options}
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results
