"""Mutation inputs. Each is checked by the REST schema it mirrors (`AgentCreate`, ...), so a
value REST refuses is refused here with the same words."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import strawberry
from pydantic import BaseModel, ValidationError
from strawberry.scalars import JSON
from strawberry.utils.str_converters import to_camel_case

from apiary.errors import Unprocessable

SchemaT = TypeVar("SchemaT", bound=BaseModel)


@strawberry.input
class AgentCreateInput:
    name: str
    description: str | None = strawberry.UNSET
    system_prompt: str | None = strawberry.UNSET
    model: str | None = strawberry.UNSET
    temperature: float | None = strawberry.UNSET
    tools: list[str] | None = strawberry.UNSET
    knowledge_base_ids: list[uuid.UUID] | None = strawberry.UNSET
    max_subagents: int | None = strawberry.UNSET
    max_cost_usd: float | None = strawberry.UNSET
    timeout_s: int | None = strawberry.UNSET


@strawberry.input(description="Fields left out keep their value; maxCostUsd: null removes the cap")
class AgentUpdateInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    system_prompt: str | None = strawberry.UNSET
    model: str | None = strawberry.UNSET
    temperature: float | None = strawberry.UNSET
    tools: list[str] | None = strawberry.UNSET
    knowledge_base_ids: list[uuid.UUID] | None = strawberry.UNSET
    max_subagents: int | None = strawberry.UNSET
    max_cost_usd: float | None = strawberry.UNSET
    timeout_s: int | None = strawberry.UNSET


@strawberry.input
class ExecutionOptionsInput:
    max_agents: int | None = strawberry.UNSET
    budget_usd: float | None = strawberry.UNSET
    deadline_s: float | None = strawberry.UNSET
    mode: str | None = strawberry.UNSET


@strawberry.input
class ExecutionCreateInput:
    agent_id: uuid.UUID
    task: str
    inputs: JSON | None = strawberry.UNSET
    thread_id: str | None = strawberry.UNSET
    options: ExecutionOptionsInput | None = strawberry.UNSET


@strawberry.input
class KnowledgeBaseCreateInput:
    name: str
    description: str | None = strawberry.UNSET
    embedding_model: str | None = strawberry.UNSET
    chunk_size: int | None = strawberry.UNSET
    chunk_overlap: int | None = strawberry.UNSET


def given(value: object) -> dict[str, Any]:
    """An input's fields the client gave (an input type nested in it, as a dict too)."""
    fields: dict[str, Any] = {}
    for name, field_value in vars(value).items():
        if field_value is strawberry.UNSET:
            continue
        has_fields = hasattr(field_value, "__strawberry_definition__")
        fields[name] = given(field_value) if has_fields else field_value
    return fields


def checked(schema: type[SchemaT], value: object, *, where: str = "input") -> SchemaT:
    """`value` as the REST schema `schema`, or the 422 REST answers, naming each field."""
    try:
        return schema.model_validate(given(value))
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            path = ".".join([where, *(to_camel_case(str(part)) for part in problem["loc"])])
            problems.append(f"{path}: {problem['msg']}")
        raise Unprocessable("; ".join(problems)) from None
