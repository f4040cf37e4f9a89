"""The dashboard's API client is generated from web/openapi.json: it must be the current spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from apiary.cli import app
from apiary.executions.event_types import ExecutionEventType

SPEC = Path(__file__).resolve().parent.parent / "web" / "openapi.json"


def test_committed_openapi_json_is_the_current_spec(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["openapi", "--output", str(fresh)])
    assert result.exit_code == 0, result.output
    assert orjson.loads(fresh.read_bytes()) == orjson.loads(SPEC.read_bytes()), (
        "web/openapi.json is stale: run `make web-api` and commit web/openapi.json "
        "and web/src/api/schema.d.ts and constraints.ts"
    )
    assert fresh.read_text() == SPEC.read_text()


def _integers(
    schema: Any, spec: dict[str, Any], where: str, seen: frozenset[str]
) -> list[tuple[str, Any]]:
    """Every integer schema reachable from `schema`, with where it was found."""
    if isinstance(schema, list):
        return [hit for item in schema for hit in _integers(item, spec, where, seen)]
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return []
        target = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return _integers(target, spec, f"{where} -> {ref.rsplit('/', 1)[1]}", seen | {ref})
    found = [(where, schema)] if schema.get("type") == "integer" else []
    for key, value in schema.items():
        if key == "properties":
            for name, child in value.items():
                found += _integers(child, spec, f"{where}.{name}", seen)
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            found += _integers(value, spec, where, seen)
    return found


def test_every_integer_a_client_sends_has_a_bound_the_stores_take() -> None:
    # A client's 99999999999999999999 must be a 422 naming the field, not a 500 from the
    # database driver or the JSON encoder (issue 14): the spec bounds every integer input.
    spec = orjson.loads(SPEC.read_bytes())
    unbounded = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            inputs = [
                (f"{label} ?{parameter['name']}", parameter.get("schema", {}))
                for parameter in operation.get("parameters", [])
            ]
            for media in operation.get("requestBody", {}).get("content", {}).values():
                inputs.append((f"{label} body", media.get("schema", {})))
            for where, schema in inputs:
                for found_at, integer in _integers(schema, spec, where, frozenset()):
                    if not (
                        integer.get("minimum", -(2**64)) >= -(2**63)
                        and integer.get("maximum", 2**64) <= 2**63 - 1
                    ):
                        unbounded.append(found_at)
    assert unbounded == [], "integers without bounds a BIGINT column takes: " + ", ".join(unbounded)


def test_the_spec_types_each_execution_event_and_its_data() -> None:
    """The event stream's schema is a union discriminated on `type`, one member per event
    type the engine emits, each naming the schema of its `data` (the dashboard's generated
    types read the fields from there, with no hand-written mirror)."""
    spec = orjson.loads(SPEC.read_bytes())
    schemas = spec["components"]["schemas"]
    stream = spec["paths"]["/api/v1/executions/{execution_id}/events"]["get"]["responses"]["200"]
    documented = stream["content"]["text/event-stream"]["schema"]["properties"]["data"]
    assert documented["contentSchema"] == {"$ref": "#/components/schemas/ExecutionEvent"}
    event = schemas["ExecutionEvent"]
    assert event["discriminator"]["propertyName"] == "type"
    mapping = event["discriminator"]["mapping"]
    assert set(mapping) == {kind.value for kind in ExecutionEventType}
    for kind, ref in mapping.items():
        member = schemas[ref.rsplit("/", 1)[1]]
        assert member["properties"]["type"]["const"] == kind
        assert set(member["required"]) == {"seq", "type", "data", "created_at"}
        data = schemas[member["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
        assert data["type"] == "object", kind
        assert data["properties"], kind
    done = schemas[mapping["done"].rsplit("/", 1)[1]]["properties"]["data"]["$ref"]
    assert schemas[done.rsplit("/", 1)[1]]["properties"]["figures"] == {
        "$ref": "#/components/schemas/ExecutionFigures"
    }
