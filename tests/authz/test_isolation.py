"""Tenant isolation, walked over every route the app has.

Tenant A owns members, an API key and audit entries. Tenant B's admin, by JWT and by API
key, calls every tenant-owned route with A's ids in the path: each answers 404, no body
mentions anything of A's, and A's data is unchanged afterwards. A new route with a path
parameter the walk does not know fails here until A owns a resource of that kind below.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import astuple, dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from apiary.auth.dependencies import required_permission
from apiary.authz.permissions import KEY_WITHHELD, Permission, Role
from apiary.authz.scope import TenantScope
from apiary.billing.models import Invoice
from apiary.db import utcnow
from apiary.executions.models import Execution
from apiary.gateway import anthropic_api
from apiary.gateway.openai_api import HOT_ROUTES
from apiary.gateway.responses_wire import response_id
from apiary.main import API_PREFIX, API_ROUTERS, OPENAI_ROUTERS
from apiary.responses.models import StoredResponse
from apiary.runtime import Runtime
from apiary.usage.models import LedgerEntry
from tests.factories import Caller, make_api_key, make_member, make_tenant

pytestmark = pytest.mark.both_databases

# Routes anyone may call without credentials.
PUBLIC = {
    ("GET", "/api/v1/auth/config"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/oidc"),
    ("POST", "/api/v1/auth/oidc/code"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/healthz"),
    ("GET", "/.well-known/jwks.json"),  # public keys only (tests/auth/test_token_keys.py)
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/billing/stripe/webhook"),  # signed by Stripe (tests/billing)
}

# A valid body for each write route, so a request reaches the choke point instead of
# stopping at validation. "{n}" makes names unique per walking caller.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/auth/logout"): {},
    ("POST", "/api/v1/members"): {"email": "walker-{n}@b.example", "role": "viewer"},
    ("POST", "/api/v1/members/invitations"): {"email": "nobody-{n}@b.example", "role": "viewer"},
    ("POST", "/api/v1/invitations/{invitation_id}/accept"): {},
    ("POST", "/api/v1/invitations/{invitation_id}/decline"): {},
    ("POST", "/api/v1/privacy/users/{user_id}/erasure"): {},
    ("PATCH", "/api/v1/members/{membership_id}"): {"role": "viewer"},
    ("POST", "/api/v1/api-keys"): {"name": "walk", "role": "viewer"},
    ("POST", "/api/v1/tenants"): {"name": "walk-tenant-{n}"},
    ("PATCH", "/api/v1/tenants/{tenant_id}"): {"plan": "stolen"},
    # A model nobody serves: the call is authorized and routed, and fails before any upstream.
    ("POST", "/v1/chat/completions"): {
        "model": "no-such-model",
        "messages": [{"role": "user", "content": "hello"}],
    },
    ("POST", "/v1/embeddings"): {"model": "no-such-model", "input": "x"},
    ("POST", "/v1/completions"): {"model": "no-such-model", "prompt": "x"},
    # A's stored response, continued: not found for B, before any model is called.
    ("POST", "/v1/responses"): {
        "model": "no-such-model",
        "input": "x",
        "previous_response_id": "{response_id}",
    },
    ("POST", "/v1/messages"): {
        "model": "no-such-model",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
    },
    ("POST", "/v1/messages/count_tokens"): {
        "model": "no-such-model",
        "messages": [{"role": "user", "content": "x"}],
    },
    ("PATCH", "/api/v1/limits"): {"monthly_budget_usd": 5},
    ("POST", "/api/v1/knowledge-bases"): {"name": "walk-kb-{n}"},
    # A's knowledge base is not found before any body is read, so no file is needed.
    ("POST", "/api/v1/knowledge-bases/{kb_id}/documents"): {},
    ("POST", "/api/v1/knowledge-bases/{kb_id}/documents/{document_id}/reindex"): {},
    ("POST", "/api/v1/knowledge-bases/{kb_id}/search"): {"query": "alpha-corp secret"},
    ("POST", "/api/v1/agents"): {"name": "walker-{n}"},
    ("PATCH", "/api/v1/agents/{agent_id}"): {"description": "stolen"},
    # A's agent, named in the body: not found for B, so nothing runs.
    ("POST", "/api/v1/executions"): {"agent_id": "{agent_id}", "task": "steal"},
    ("POST", "/api/v1/executions/{execution_id}/cancel"): {},
    ("PATCH", "/api/v1/billing/settings"): {"currency": "USD"},
    ("POST", "/api/v1/admin/plans"): {"key": "walk-{n}", "name": "Walk", "monthly_fee_usd": "1"},
    ("PATCH", "/api/v1/admin/plans/{key}"): {"seats": 1},
    ("POST", "/api/v1/admin/billing/close"): {"period": "2026-01"},
    ("POST", "/api/v1/admin/tenants/{tenant_id}/credits"): {"amount_usd": "5", "reason": "walk"},
    ("POST", "/api/v1/alerts/channels"): {"kind": "email", "target": "walk-{n}@b.example"},
    ("PATCH", "/api/v1/alerts/channels/{channel_id}"): {"target": "stolen@b.example"},
    ("POST", "/api/v1/alerts/channels/{channel_id}/rotate-secret"): {},
    ("POST", "/api/v1/alerts/channels/{channel_id}/test"): {},
    ("POST", "/api/v1/alerts/deliveries/{delivery_id}/replay"): {},
}
# Statuses for routes whose walk body cannot succeed by design.
EXPECTED: dict[tuple[str, str], set[int]] = {
    # A's member is nobody B's admin can reach (404); a key acts on no person's data (403).
    ("GET", "/api/v1/privacy/users/{user_id}/export"): {403, 404},
    ("POST", "/api/v1/privacy/users/{user_id}/erasure"): {403, 404},
    # Only existing accounts are invited; the walker's email has none.
    ("POST", "/api/v1/members/invitations"): {404},
    ("POST", "/v1/chat/completions"): {404},
    ("POST", "/v1/embeddings"): {404},
    ("POST", "/v1/completions"): {404},
    ("POST", "/v1/responses"): {400},
    ("POST", "/v1/messages"): {404},
    ("POST", "/v1/messages/count_tokens"): {404},
    ("POST", "/api/v1/executions"): {404},
}


@dataclass(frozen=True)
class Walked:
    """One operation the app serves: what the walk needs to know to call it."""

    method: str
    path: str
    permission: Permission | None
    params: tuple[str, ...]


def _permission_of(route: APIRoute) -> Permission | None:
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is not None and (found := required_permission(dependant.call)):
            return found
        pending.extend(dependant.dependencies)
    return None


def _routes(app: FastAPI) -> list[Walked]:
    routers = [(API_PREFIX, router) for router in API_ROUTERS]
    routers += [("", router) for router in OPENAI_ROUTERS]
    routes = [
        Walked(
            method, prefix + route.path_format, _permission_of(route), tuple(route.param_convertors)
        )
        for prefix, router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"})
    ]
    # The gateway's hot path answers these before FastAPI's router sees them.
    routes += [Walked("POST", hot.path, hot.permission, ()) for hot in HOT_ROUTES.values()]
    routes += [Walked("POST", path, anthropic_api.PERMISSION, ()) for path in anthropic_api.ROUTES]
    # The walk must cover every operation the app serves: compare with its OpenAPI paths.
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    walked = {(route.method, route.path) for route in routes}
    missing = served - walked - PUBLIC
    assert not missing, f"routes outside API_ROUTERS, unseen by the walk: {sorted(missing)}"
    return routes


def test_every_route_declares_a_permission(app: FastAPI) -> None:
    undeclared = [
        f"{method} {path}"
        for method, path, permission, _ in map(astuple, _routes(app))
        if (method, path) not in PUBLIC and permission is None
    ]
    assert undeclared == [], "endpoints without authorize(Permission.X): " + ", ".join(undeclared)


async def _tenant_a(runtime: Runtime, client: httpx.AsyncClient) -> tuple[dict[str, str], Caller]:
    tenant = await make_tenant(runtime, client, "alpha-corp")
    developer = await make_member(client, tenant, Role.DEVELOPER, email="dev@alpha-corp.example")
    # A's invitation of an account from elsewhere, which B must not see, cancel or answer.
    await make_tenant(runtime, client, "charlie-ltd")
    invitation = await client.post(
        "/api/v1/members/invitations",
        headers=tenant.admin.headers,
        json={"email": "admin@charlie-ltd.example", "role": "viewer"},
    )
    assert invitation.status_code == 201, invitation.text
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    # A's key is used once, so that it has a last-used time to leak.
    assert (await client.get("/api/v1/auth/me", headers=key.headers)).status_code == 200
    await runtime.key_usage.flush()
    # ... and A has usage in the ledger, for the usage routes to leak.
    async with runtime.session_factory() as session:
        session.add(
            LedgerEntry(
                tenant_id=uuid.UUID(tenant.id),
                kind="chat",
                requested_model="alpha-corp-model",
                provider="alpha-corp-provider",
                model="alpha-corp-model",
                prompt_tokens=11,
                completion_tokens=7,
                cost_usd=0.5,
                latency_ms=3.0,
                status="ok",
            )
        )
        await session.commit()
    # ... and a knowledge base with an ingested document, for the knowledge routes.
    kb = await client.post(
        "/api/v1/knowledge-bases", headers=tenant.admin.headers, json={"name": "alpha-corp-kb"}
    )
    assert kb.status_code == 201, kb.text
    document = await client.post(
        f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
        headers=tenant.admin.headers,
        files={"file": ("alpha-corp-plans.md", b"# alpha-corp secret\n\nThe launch is in May.")},
    )
    assert document.status_code == 201, document.text
    await runtime.ingestion.join()
    agent = await client.post(
        "/api/v1/agents",
        headers=developer.headers,
        json={"name": "alpha-corp-agent", "system_prompt": "alpha-corp secret prompt"},
    )
    assert agent.status_code == 201, agent.text
    # A finished execution, written directly: running one here would start the bundled model.
    execution_id = uuid.uuid4()
    async with runtime.session_factory() as session:
        session.add(
            Execution(
                id=execution_id,
                tenant_id=uuid.UUID(tenant.id),
                agent_id=uuid.UUID(agent.json()["id"]),
                agent_version=1,
                agent={},
                task="alpha-corp secret task",
                state="succeeded",
                answer="alpha-corp secret answer",
                role="developer",
            )
        )
        # ... and a stored answer of the Responses API, written directly for the same reason.
        stored_id = uuid.uuid4()
        session.add(
            StoredResponse(
                id=stored_id,
                tenant_id=uuid.UUID(tenant.id),
                expires_at=utcnow() + dt.timedelta(days=1),
                model="alpha-corp-model",
                status="completed",
                document={"id": response_id(stored_id), "output": [], "note": "alpha-corp"},
                context=[{"type": "message", "role": "user", "content": "alpha-corp secret"}],
            )
        )
        await session.commit()
    # ... and an invoice, written directly (closing needs a month that has ended).
    invoice_id = uuid.uuid4()
    async with runtime.session_factory() as session:
        session.add(
            Invoice(
                id=invoice_id,
                tenant_id=uuid.UUID(tenant.id),
                period="2026-01",
                number="alpha-corp-0001",
                plan="enterprise",
                currency="USD",
                usd_rate=1,
                tax_rate=0,
                subtotal_minor=100,
                tax_minor=0,
                total_minor=100,
                provider_cost_usd=1,
                billed_usd=1,
                calls=1,
                prompt_tokens=1,
                completion_tokens=1,
                executions=0,
                storage_bytes=0,
            )
        )
        await session.commit()
    # ... and an alert channel with a delivery in its log.
    channel = await client.post(
        "/api/v1/alerts/channels",
        headers=tenant.admin.headers,
        json={"kind": "webhook", "target": "http://127.0.0.1:9/alpha-corp-hook"},
    )
    assert channel.status_code == 201, channel.text
    delivery = await client.post(
        f"/api/v1/alerts/channels/{channel.json()['id']}/test", headers=tenant.admin.headers
    )
    assert delivery.status_code == 202, delivery.text
    resources = {
        "channel_id": channel.json()["id"],
        "delivery_id": delivery.json()["id"],
        "invoice_id": str(invoice_id),
        "key": "alpha-corp-plan",  # the plan routes are the super admin's: 403 first
        "agent_id": agent.json()["id"],
        "execution_id": str(execution_id),
        "membership_id": developer.extra["membership_id"],
        "user_id": str(developer.user_id),
        "invitation_id": invitation.json()["id"],
        "key_id": key.extra["key_id"],
        "tenant_id": tenant.id,
        "kb_id": kb.json()["id"],
        "document_id": document.json()["id"],
        "response_id": response_id(stored_id),
        "model_id": "unserved-model",  # models are not a tenant's: an unknown one is a 404
    }
    return resources, tenant.admin


def _body(method: str, path: str, n: int, resources: dict[str, str]) -> dict[str, Any] | None:
    template = BODIES.get((method, path))
    if template is None:
        return None
    return {k: v.format(n=n, **resources) if isinstance(v, str) else v for k, v in template.items()}


def _leaks(body: str, url: str, resources: dict[str, str]) -> list[str]:
    # An id the caller put in the URL or body may be echoed back ("... not found"); anything
    # else of A's may not appear at all.
    markers = [value for value in resources.values() if value not in url] + ["alpha-corp"]
    return [marker for marker in markers if marker in body]


async def test_second_tenant_finds_nothing_of_the_first(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    resources, a_admin = await _tenant_a(runtime, client)
    before = {
        path: (await client.get(path, headers=a_admin.headers)).json()
        for path in (
            "/api/v1/members",
            "/api/v1/api-keys",
            "/api/v1/audit-log",
            f"/api/v1/knowledge-bases/{resources['kb_id']}/documents",
        )
    }
    b = await make_tenant(runtime, client, "bravo-inc")
    b_key = await make_api_key(runtime, b, Role.TENANT_ADMIN)
    failures: list[str] = []
    walked = 0
    callers = (("B's admin (JWT)", b.admin), ("B's admin key", b_key))
    for n, (caller_name, caller) in enumerate(callers):
        for route in _routes(app):
            method, path = route.method, route.path
            if (method, path) in PUBLIC or path == "/api/v1/auth/logout":
                continue
            permission = route.permission
            unknown = [p for p in route.params if p not in resources]
            if unknown:
                failures.append(
                    f"{method} {path}: path parameter(s) {unknown} unknown to the walk; "
                    "give tenant A a resource of that kind in _tenant_a()"
                )
                continue
            url = path.format(**resources)
            if (method, path) not in BODIES and method in {"POST", "PATCH", "PUT"}:
                failures.append(f"{method} {path}: add a valid body to BODIES")
                continue
            body = _body(method, path, n, resources)
            response = await client.request(method, url, headers=caller.headers, json=body)
            walked += 1
            if caller is b_key and permission in KEY_WITHHELD:
                expected = {403}  # what a key never holds, whatever its role
            elif (method, path) in EXPECTED:
                expected = EXPECTED[(method, path)]
            elif permission in (Permission.TENANTS_MANAGE, Permission.PLANS_MANAGE):
                expected = {403}  # platform routes: a tenant admin is refused outright
            elif route.params:
                expected = {404}  # A's resource does not exist for B
            else:
                expected = {200, 201}
            if response.status_code not in expected:
                failures.append(f"{caller_name}: {method} {url} -> {response.status_code}")
            if leaked := _leaks(response.text, f"{url} {body}", resources):
                failures.append(f"{caller_name}: {method} {url} leaked {leaked}")
    assert walked >= 20
    assert failures == [], "\n".join(failures)

    after = {
        path: (await client.get(path, headers=a_admin.headers)).json()
        for path in (
            "/api/v1/members",
            "/api/v1/api-keys",
            f"/api/v1/knowledge-bases/{resources['kb_id']}/documents",
        )
    }
    assert after["/api/v1/members"] == before["/api/v1/members"]
    documents = f"/api/v1/knowledge-bases/{resources['kb_id']}/documents"
    assert after[documents] == before[documents]
    assert after[documents]["items"][0]["status"] == "ready"
    assert (
        await runtime.vectors.count(
            TenantScope(uuid.UUID(resources["tenant_id"])),
            knowledge_base_id=uuid.UUID(resources["kb_id"]),
        )
        == 1
    )
    assert after["/api/v1/api-keys"]["items"][0]["revoked_at"] is None
    assert after["/api/v1/api-keys"] == before["/api/v1/api-keys"]


async def test_ids_from_the_body_cannot_pick_a_tenant(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    resources, _ = await _tenant_a(runtime, client)
    b = await make_tenant(runtime, client, "bravo-inc")
    response = await client.post(
        "/api/v1/api-keys",
        headers=b.admin.headers,
        json={"name": "sneaky", "role": "viewer", "tenant_id": resources["tenant_id"]},
    )
    assert response.status_code == 422  # unknown fields are refused, not silently used
    assert "tenant_id" in response.json()["detail"]


async def test_a_key_acts_only_in_its_own_tenant(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    a = await make_tenant(runtime, client, "alpha-corp")
    b = await make_tenant(runtime, client, "bravo-inc")
    b_key = await make_api_key(runtime, b, Role.TENANT_ADMIN)
    members = await client.get("/api/v1/members", headers=b_key.headers)
    emails = [m["email"] for m in members.json()["items"]]
    assert emails == ["admin@bravo-inc.example"]
    assert a.id not in members.text


# The GraphQL API, walked the same way: every root field of every operation type, with A's
# ids where it takes one. A field missing here fails the walk until it is added.
GRAPHQL_WALK: dict[tuple[str, str], str] = {
    ("query", "agents"): "{ agents { totalCount nodes { id name systemPrompt } } }",
    ("query", "agent"): '{ agent(id: "{agent_id}") { id name } }',
    ("query", "executions"): "{ executions { totalCount nodes { id task answer } } }",
    ("query", "execution"): '{ execution(id: "{execution_id}") { id task answer } }',
    ("query", "knowledgeBases"): "{ knowledgeBases { totalCount nodes { id name } } }",
    ("query", "knowledgeBase"): '{ knowledgeBase(id: "{kb_id}") { id name } }',
    ("query", "document"): (
        '{ document(knowledgeBaseId: "{kb_id}", id: "{document_id}") { id filename } }'
    ),
    ("query", "usageSummary"): "{ usageSummary { calls costUsd } }",
    ("query", "usageSeries"): "{ usageSeries(groupBy: MODEL) { rows { key calls } } }",
    ("query", "members"): "{ members { totalCount nodes { id email } } }",
    ("query", "member"): '{ member(id: "{membership_id}") { id email } }',
    ("query", "apiKeys"): "{ apiKeys { totalCount nodes { id name prefix } } }",
    ("query", "apiKey"): '{ apiKey(id: "{key_id}") { id name } }',
    ("query", "auditLog"): "{ auditLog { totalCount nodes { action targetId details } } }",
    ("mutation", "createAgent"): 'mutation { createAgent(input: {name: "walker-{n}"}) { id } }',
    ("mutation", "updateAgent"): (
        'mutation { updateAgent(id: "{agent_id}", input: {description: "stolen"}) { id } }'
    ),
    ("mutation", "createExecution"): (
        'mutation { createExecution(input: {agentId: "{agent_id}", task: "steal"}) '
        "{ execution { id } } }"
    ),
    ("mutation", "cancelExecution"): 'mutation { cancelExecution(id: "{execution_id}") { id } }',
    ("mutation", "createKnowledgeBase"): (
        'mutation { createKnowledgeBase(input: {name: "walk-kb-{n}"}) { id } }'
    ),
    ("subscription", "executionEvents"): (
        'subscription { executionEvents(executionId: "{execution_id}") { seq data } }'
    ),
}
# Root fields that take one of A's ids: B is told "not found". The others answer B's own.
GRAPHQL_NOT_FOUND = {
    "agent",
    "execution",
    "knowledgeBase",
    "document",
    "member",
    "apiKey",
    "updateAgent",
    "createExecution",
    "cancelExecution",
    "executionEvents",
}


def _graphql_fields() -> set[tuple[str, str]]:
    from apiary.graphql.schema import schema

    graphql_schema = schema._schema
    roots = {
        "query": graphql_schema.query_type,
        "mutation": graphql_schema.mutation_type,
        "subscription": graphql_schema.subscription_type,
    }
    return {(kind, name) for kind, root in roots.items() if root for name in root.fields}


def _document(template: str, n: int, resources: dict[str, str]) -> str:
    document = template
    for name, value in {**resources, "n": str(n)}.items():
        document = document.replace("{" + name + "}", value)
    return document


async def _subscribe(app: FastAPI, token: str, document: str) -> dict[str, Any]:
    from httpx_ws import AsyncWebSocketSession, aconnect_ws
    from httpx_ws.transport import ASGIWebSocketTransport

    transport = ASGIWebSocketTransport(app=app)
    socket: AsyncWebSocketSession
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http,
        aconnect_ws("/graphql", http, subprotocols=["graphql-transport-ws"]) as socket,
    ):
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await socket.send_json(init)
        assert (await socket.receive_json())["type"] == "connection_ack"
        await socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": document}})
        message: dict[str, Any] = await socket.receive_json()
        return message["payload"] if message["type"] == "next" else {"errors": message}


async def test_second_tenant_finds_nothing_of_the_first_through_graphql(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    resources, a_admin = await _tenant_a(runtime, client)
    unwalked = _graphql_fields() - set(GRAPHQL_WALK)
    assert not unwalked, f"GraphQL root fields unseen by the walk: {sorted(unwalked)}"
    b = await make_tenant(runtime, client, "bravo-inc")
    b_key = await make_api_key(runtime, b, Role.TENANT_ADMIN)
    failures: list[str] = []
    callers = (("B's admin (JWT)", b.admin), ("B's admin key", b_key))
    for n, (caller_name, caller) in enumerate(callers):
        for (kind, name), template in sorted(GRAPHQL_WALK.items()):
            document = _document(template, n, resources)
            if kind == "subscription":
                answer = await _subscribe(app, caller.token, document)
            else:
                response = await client.post(
                    "/graphql", headers=caller.headers, json={"query": document}
                )
                assert response.status_code == 200, response.text
                answer = response.json()
            errors = [error["extensions"]["error"] for error in answer.get("errors") or []]
            expected = ["NotFound"] if name in GRAPHQL_NOT_FOUND else []
            if errors != expected:
                failures.append(f"{caller_name}: {kind} {name} -> {errors or answer}")
            if leaked := _leaks(orjson.dumps(answer).decode(), document, resources):
                failures.append(f"{caller_name}: {kind} {name} leaked {leaked}")
    assert failures == [], "\n".join(failures)
    # A's agent and execution are as they were.
    agent = await client.get(f"/api/v1/agents/{resources['agent_id']}", headers=a_admin.headers)
    assert agent.json()["description"] == ""
    async with runtime.session_factory() as session:
        execution = await session.get(Execution, uuid.UUID(resources["execution_id"]))
        assert execution is not None
        assert execution.cancel_requested is False
