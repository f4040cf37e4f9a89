"""Agents with knowledge bases: the `knowledge_search` tool searches the agent's attached
knowledge bases as the execution's caller, and the execution lists the sources it used."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant
from tests.fakes import Reply, ToolCall
from tests.gateway.conftest import GatewayFactory
from tests.knowledge.helpers import BASES
from tests.swarm.conftest import Swarm, build_swarm

pytestmark = pytest.mark.both_databases

TRAVEL = (Path(__file__).parent.parent / "knowledge" / "corpus" / "travel.md").read_bytes()
OFFICE = b"# Office\n\n## Opening hours\n\nThe office opens at 8 and closes at 18.\n"


async def _knowledge_base(
    swarm: Swarm, headers: dict[str, str], filename: str, content: bytes
) -> tuple[str, str]:
    """A knowledge base with one ingested document: (knowledge base id, document id)."""
    created = await swarm.http.post(
        BASES, headers=headers, json={"name": f"kb-{uuid.uuid4().hex[:6]}"}
    )
    assert created.status_code == 201, created.text
    kb_id = created.json()["id"]
    uploaded = await swarm.http.post(
        f"{BASES}/{kb_id}/documents",
        headers=headers,
        files={"file": (filename, content, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    await swarm.gateway.runtime.ingestion.join()
    return kb_id, uploaded.json()["id"]


async def _agent(swarm: Swarm, headers: dict[str, str], **fields: Any) -> httpx.Response:
    return await swarm.http.post(
        "/api/v1/agents",
        headers=headers,
        json={
            "name": f"reader-{uuid.uuid4().hex[:6]}",
            "model": "default",
            "tools": ["knowledge_search"],
            **fields,
        },
    )


def _search_then_answer(swarm: Swarm, query: str, answer: str) -> None:
    swarm.gateway.upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("knowledge_search", f'{{"query": "{query}"}}')]),
        Reply(text=answer),
    )


def _tool_output(swarm: Swarm) -> str:
    body = swarm.gateway.upstream.requests_for("openai")[-1].body
    assert body is not None
    message = body["messages"][-1]
    assert message["role"] == "tool"
    return str(message["content"])


async def test_agent_searches_its_knowledge_base_and_cites_it(
    make_gateway: GatewayFactory,
) -> None:
    swarm = await build_swarm(make_gateway)
    kb_id, document_id = await _knowledge_base(swarm, swarm.headers, "travel.md", TRAVEL)
    created = await _agent(swarm, swarm.headers, knowledge_base_ids=[kb_id])
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["knowledge_base_ids"] == [kb_id]
    reader = Swarm(swarm.gateway, swarm.http, swarm.headers, agent["id"])

    _search_then_answer(reader, "hotel nightly rate cap", "Hotels: at most 180 EUR a night [1].")
    execution = await reader.wait((await reader.start(options={"mode": "single"}))["id"])
    assert execution["state"] == "succeeded", execution
    output = _tool_output(reader)
    assert output.startswith("[1] (travel.md")
    assert "180 EUR" in output
    assert execution["answer"] == "Hotels: at most 180 EUR a night [1]."
    sources = execution["sources"]
    assert sources, execution
    assert {s["document_id"] for s in sources} == {document_id}
    assert {s["filename"] for s in sources} == {"travel.md"}
    assert all(s["char_end"] > s["char_start"] for s in sources)
    assert len({(s["char_start"], s["char_end"]) for s in sources}) == len(sources)
    assert any("Hotels" in (s["section"] or "") for s in sources)

    # Detaching is a new version; the old version keeps what it had.
    changed = await swarm.http.patch(
        f"/api/v1/agents/{agent['id']}", headers=swarm.headers, json={"knowledge_base_ids": []}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    versions = await swarm.http.get(f"/api/v1/agents/{agent['id']}/versions", headers=swarm.headers)
    assert [v["definition"]["knowledge_base_ids"] for v in versions.json()["items"]] == [
        [],
        [kb_id],
    ]


async def test_agent_without_knowledge_bases_is_told_so(make_gateway: GatewayFactory) -> None:
    swarm = await build_swarm(make_gateway, tools=["knowledge_search"])
    _search_then_answer(swarm, "anything", "nothing to cite")
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    assert execution["state"] == "succeeded", execution
    assert _tool_output(swarm) == "this agent has no knowledge bases attached"
    assert execution["sources"] == []


async def test_another_tenants_knowledge_base_is_out_of_reach(
    make_gateway: GatewayFactory, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    swarm = await build_swarm(make_gateway)
    a_kb, _ = await _knowledge_base(swarm, swarm.headers, "travel.md", TRAVEL)
    tenant_b = await make_tenant(runtime, client, "kb-tenant-b")
    key_b = await make_api_key(runtime, tenant_b, Role.DEVELOPER)
    b_headers = {"Authorization": f"Bearer {key_b.token}"}

    # B cannot attach A's knowledge base, nor one that does not exist; neither leaks.
    refused = await _agent(swarm, b_headers, knowledge_base_ids=[a_kb])
    assert refused.status_code == 422, refused.text
    assert a_kb in refused.json()["detail"]
    missing = str(uuid.uuid4())
    refused_missing = await _agent(swarm, b_headers, knowledge_base_ids=[missing])
    assert refused_missing.status_code == 422
    assert refused_missing.json()["detail"].replace(missing, a_kb) == refused.json()["detail"]

    # B's own agent, on B's own knowledge base, never gets A's passages.
    b_kb, b_document = await _knowledge_base(swarm, b_headers, "office.md", OFFICE)
    created = await _agent(swarm, b_headers, knowledge_base_ids=[b_kb])
    assert created.status_code == 201, created.text
    attached = await swarm.http.patch(
        f"/api/v1/agents/{created.json()['id']}",
        headers=b_headers,
        json={"knowledge_base_ids": [b_kb, a_kb]},
    )
    assert attached.status_code == 422
    reader = Swarm(swarm.gateway, swarm.http, b_headers, created.json()["id"])
    _search_then_answer(reader, "hotel nightly rate cap in EUR", "no hotel policy here")
    execution = await reader.wait((await reader.start(options={"mode": "single"}))["id"])
    assert execution["state"] == "succeeded", execution
    output = _tool_output(reader)
    assert "office.md" in output
    assert "travel.md" not in output
    assert "180 EUR" not in output
    assert {s["document_id"] for s in execution["sources"]} == {b_document}
