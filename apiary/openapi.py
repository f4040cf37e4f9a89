"""The OpenAPI document: FastAPI's, with every error an operation can answer described.

Some errors follow from what an operation is, not from what it does, so they are added
here by rule instead of on every route: an authenticated operation can answer 401 (no
or a bad credential) and 403 (a role without the permission); one with an id in its path
can answer 404 (absent, or another tenant's); one that takes parameters or a body can
answer 422 with Apiary's error body (FastAPI documents its own shape, which Apiary does not
send); anything that reads the database or Redis answers 503 with Retry-After while one
is unreachable; every `/v1` operation answers errors in OpenAI's shape (`/v1/messages` in
Anthropic's). An error particular to a route (409 on a name taken, 413 on an upload too
large) is declared on the route with `errors.documented(...)`. The fuzzer in
tests/test_fuzz_api.py fails on any status an operation answers that its document does not
list.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from apiary.errors import STATUS_DESCRIPTIONS, AnthropicErrorBody, ErrorBody, OpenAIErrorBody

# Operations anyone may call without credentials (the isolation test keeps its own list).
PUBLIC = frozenset(
    {
        ("get", "/api/v1/auth/config"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/oidc"),
        ("post", "/api/v1/auth/oidc/code"),
        ("post", "/api/v1/auth/refresh"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        # Stripe's deliveries carry a signature of their body instead of a credential.
        ("post", "/api/v1/billing/stripe/webhook"),
    }
)
# Sign-ins refuse a bad credential, and throttle repeated failures.
SIGN_IN = frozenset(
    {
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/oidc"),
        ("post", "/api/v1/auth/oidc/code"),
        ("post", "/api/v1/auth/refresh"),
    }
)
# Every gateway call can be refused for what it asks, who asks or what the tenant has left,
# and can fail upstream.
OPENAI_ERRORS = (400, 401, 402, 403, 404, 413, 422, 429, 502, 503, 504)


def _error_response(status: int, schema: str) -> dict[str, Any]:
    return {
        "description": STATUS_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _rule_errors(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    statuses: set[int] = set()
    if (method, path) not in PUBLIC and path.startswith(("/api/", "/v1/")):
        statuses |= {401, 403}
    if path.startswith("/api/"):
        statuses.add(503)  # PostgreSQL or Redis unreachable (docs/architecture.md, faults)
    if (method, path) in SIGN_IN:
        statuses |= {401, 429}
    if "{" in path:
        statuses.add(404)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if operation.get("requestBody"):
        statuses.add(400)  # a body that is not JSON (or not UTF-8) at all
    return statuses


def _event_stream(described: dict[str, Any]) -> None:
    """A Server-Sent Events response is documented with the model of one event's `data`;
    OpenAPI 3.1 reads a stream's schema as each event (its `event`, `id` and `data` text),
    so the model becomes the schema of the JSON that `data` carries."""
    stream = described.get("content", {}).get("text/event-stream")
    if stream is None or "$ref" not in stream.get("schema", {}):
        return
    stream["schema"] = {
        "type": "object",
        "properties": {
            "event": {"type": "string", "description": "the event's type"},
            "id": {"type": "string", "description": "its sequence number, for Last-Event-ID"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": stream["schema"]["$ref"]},
            },
        },
        "required": ["data"],
    }


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def _created_id(operation: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """The status whose body is the created resource with its `id`, if the operation makes one."""
    for status in ("201", "202"):
        content = operation.get("responses", {}).get(status, {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        model = spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
        if "id" in model.get("properties", {}):
            return status
    return None


def link_created_resources(spec: dict[str, Any]) -> None:
    """OpenAPI links from each create to what takes the created id: `POST /agents` answers
    an agent whose `id` is the `agent_id` of `GET`, `PATCH` and `DELETE /agents/{agent_id}`
    and of `/agents/{agent_id}/versions`. Clients that follow links (and the fuzzer's
    stateful phase) can then create, read, update and delete in one sequence."""
    for path, operations in spec["paths"].items():
        create = operations.get("post")
        status = _created_id(create, spec) if create else None
        if create is None or status is None:
            continue
        known = _path_params(path)
        links: dict[str, Any] = {}
        for target, target_operations in spec["paths"].items():
            rest = target.removeprefix(path + "/")
            if rest == target or not rest.startswith("{"):
                continue
            new = [name for name in _path_params(target) if name not in known]
            if len(new) != 1 or not rest.startswith(f"{{{new[0]}}}"):
                continue
            parameters = {name: f"$request.path.{name}" for name in known}
            parameters[new[0]] = "$response.body#/id"
            for operation in target_operations.values():
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": parameters,
                }
        if links:
            create["responses"][status]["links"] = links


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the errors every operation can answer to `spec` (FastAPI's document), in place,
    and describe its event streams as OpenAPI 3.1 reads them."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    schemas["OpenAIErrorBody"] = OpenAIErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas["AnthropicErrorBody"] = AnthropicErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for body in ("OpenAIErrorBody", "AnthropicErrorBody"):
        for nested, definition in schemas[body].pop("$defs", {}).items():
            schemas[nested] = definition
    for path, operations in spec["paths"].items():
        openai_shape = path.startswith("/v1/")
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for described in responses.values():
                _event_stream(described)
            statuses = _rule_errors(method, path, operation)
            if openai_shape:
                statuses |= set(OPENAI_ERRORS)
            schema = "OpenAIErrorBody" if openai_shape else "ErrorBody"
            if path.startswith("/v1/messages"):
                schema = "AnthropicErrorBody"  # the Messages API answers in Anthropic's shape
            for status in sorted(statuses):
                described = responses.get(str(status))
                # FastAPI's own 422 (HTTPValidationError) is replaced: it is not what we send.
                if described is None or "HTTPValidationError" in str(described):
                    responses[str(status)] = _error_response(status, schema)
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(spec["paths"]):
            schemas.pop(unused, None)
    return spec


def install(app: FastAPI) -> None:
    """Make `app.openapi()` return the document with its errors described and its
    created resources linked."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = document_errors(build())
            link_created_resources(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
