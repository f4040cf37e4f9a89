"""Calling /graphql in tests: one helper that posts a document and returns the response."""

from __future__ import annotations

from typing import Any

import httpx


async def gql(
    http: httpx.AsyncClient,
    query: str,
    headers: dict[str, str] | None = None,
    **variables: Any,
) -> dict[str, Any]:
    """The response's JSON: `data` and, when something was refused, `errors`."""
    response = await http.post(
        "/graphql", headers=headers or {}, json={"query": query, "variables": variables}
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def error_names(document: dict[str, Any]) -> list[str]:
    return [error["extensions"]["error"] for error in document.get("errors") or []]
