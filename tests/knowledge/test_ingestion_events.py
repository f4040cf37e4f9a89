"""A document's ingestion progress as Server-Sent Events: in order, resumable, tenant-scoped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import Caller, make_api_key, make_tenant
from tests.knowledge.documents import pdf_bytes
from tests.knowledge.helpers import BASES, create_base, ingested, upload
from tests.sse import parse_sse

pytestmark = pytest.mark.both_databases

CORPUS = Path(__file__).with_name("corpus")


async def _events(
    client: httpx.AsyncClient,
    caller: Caller,
    kb_id: str,
    doc_id: str,
    *,
    last_event_id: int | None = None,
    after: int | None = None,
) -> list[dict[str, Any]]:
    headers = dict(caller.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await client.get(
        f"{BASES}/{kb_id}/documents/{doc_id}/events",
        headers=headers,
        params={} if after is None else {"after": after},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


async def test_an_upload_streams_every_step_in_order_then_resumes(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.settings.knowledge, "embed_batch_size", 2)
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    manual = pdf_bytes([[f"Page {n} covers the Kestrel arm's joint {n}."] for n in range(5)])
    created = await upload(client, tenant.admin, kb["id"], "arm.pdf", manual)

    # Asked for at once, while the job is queued or running: followed live to the end.
    events = await _events(client, tenant.admin, kb["id"], created["id"])
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event"] for e in events] == [
        "queued",
        "extracting",
        "splitting",
        *["embedding", "upserting"] * 3,  # 5 chunks (one per page) in batches of 2
        "indexed",
    ]
    assert events[1]["data"] == {"content_type": "application/pdf", "size_bytes": len(manual)}
    batches = [e["data"] for e in events if e["event"] == "embedding"]
    assert [(b["batch"], b["batches"], b["chunks_done"]) for b in batches] == [
        (1, 3, 0),
        (2, 3, 2),
        (3, 3, 4),
    ]
    assert events[-1]["data"] == {"chunk_count": 5}
    document = await client.get(
        f"{BASES}/{kb['id']}/documents/{created['id']}", headers=tenant.admin.headers
    )
    assert document.json()["status"] == "ready"
    assert document.json()["chunks_done"] == 5

    # Resumed after a sequence number (header or query), only what came after it.
    by_header = await _events(client, tenant.admin, kb["id"], created["id"], last_event_id=4)
    assert [e["id"] for e in by_header] == [e["id"] for e in events[4:]]
    by_query = await _events(client, tenant.admin, kb["id"], created["id"], after=9)
    assert [e["event"] for e in by_query] == ["indexed"]

    # A re-index continues the numbering with a second run.
    reindexed = await client.post(
        f"{BASES}/{kb['id']}/documents/{created['id']}/reindex", headers=tenant.admin.headers
    )
    assert reindexed.status_code == 202
    again = await _events(client, tenant.admin, kb["id"], created["id"], after=events[-1]["id"])
    assert again[0]["id"] == events[-1]["id"] + 1
    assert again[0]["event"] == "queued"
    assert again[0]["data"] == {"reindex": True}
    assert again[-1]["event"] == "indexed"


async def test_a_broken_file_ends_with_a_failed_event_naming_the_reason(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    created = await upload(client, tenant.admin, kb["id"], "broken.json", b"{ nope")
    events = await _events(client, tenant.admin, kb["id"], created["id"])
    assert [e["event"] for e in events] == ["queued", "extracting", "failed"]
    reason = events[-1]["data"]["reason"]
    assert "invalid JSON" in reason
    document = await client.get(
        f"{BASES}/{kb['id']}/documents/{created['id']}", headers=tenant.admin.headers
    )
    assert document.json()["error"] == reason


async def test_another_tenant_cannot_follow_the_events(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = await make_tenant(runtime, client)
    kb = await create_base(client, owner.admin)
    created = await upload(
        client, owner.admin, kb["id"], "oncall.md", (CORPUS / "oncall.md").read_bytes()
    )
    await ingested(runtime)
    intruder = await make_tenant(runtime, client)
    key = await make_api_key(runtime, intruder, Role.TENANT_ADMIN)
    for caller in (intruder.admin, key):
        response = await client.get(
            f"{BASES}/{kb['id']}/documents/{created['id']}/events", headers=caller.headers
        )
        assert response.status_code == 404
        assert "oncall" not in response.text
    # A viewer of the owning tenant may follow them.
    viewer = await make_api_key(runtime, owner, Role.VIEWER)
    events = await _events(client, viewer, kb["id"], created["id"])
    assert events[-1]["event"] == "indexed"
