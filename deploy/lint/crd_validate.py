"""Validate custom resources against the upstream CRDs kept in deploy/crds.

kubernetes-validate knows only built-in kinds (it prints "Couldn't find schema" and passes
anything else), so the KEDA, Secrets Store CSI, Prometheus Operator and ArgoCD objects are
checked here: each object against its CRD version's openAPIV3Schema (types, enums,
required fields), plus the unknown fields an API server with strict field validation (the
kubectl default since 1.27) refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"

# apiVersion groups whose kinds kubernetes-validate checks itself.
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
}


def load_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Fields the schema does not declare, where it does not preserve unknown fields."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from _unknown_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, dict):
                yield from _unknown_fields(item, additional, f"{path}.{key}")
            elif properties is not None:  # a declared object, and this key is not declared
                yield f"{path}.{key}".lstrip(".")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], f"{path}[{index}]")


def validate_document(
    doc: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    """Problems with one custom resource; [] when it is valid."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    name = f"{key[1]} {doc.get('metadata', {}).get('name', '?')}"
    schema = schemas.get(key)
    if schema is None:
        return [f"{name}: no CRD schema for {key[0]} {key[1]} in {CRD_DIR}"]
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]
    problems += [f"{name}: unknown field {field}" for field in _unknown_fields(doc, schema, "")]
    return problems


def is_custom(doc: dict[str, Any]) -> bool:
    api_version = str(doc.get("apiVersion", ""))
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group not in BUILTIN_GROUPS
