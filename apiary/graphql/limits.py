"""Limits on what one query may ask for: its depth, and its cost.

The cost of a query is the number of values it may resolve: each field costs 1, times the
number of parents it is resolved for, where a field with a `first` argument (a page, an
execution's events) multiplies what is below it by its `first`, as given or by default.
A page of 50 executions with ten fields and their subtasks' ten costs about a thousand; the
limit is ten times that. A query over a limit is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import SchemaExtension

# Counted from 0 at the root field. The schema's deepest path (a page of executions, each
# one's agent's version history, each version's definition) is 8: that one is refused, and
# an agent's history is asked through agent(id).
MAX_DEPTH = 7
MAX_COST = 10_000
MAX_TOKENS = 5_000  # a document's tokens; the execution page's query has about 150


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
) -> int:
    fragments = {
        node.name.value: node
        for node in document.definitions
        if isinstance(node, FragmentDefinitionNode)
    }
    operations = [
        node for node in document.definitions if isinstance(node, OperationDefinitionNode)
    ]
    if operation_name is not None:
        operations = [op for op in operations if op.name and op.name.value == operation_name]
    total = 0
    for operation in operations:
        root = schema.get_root_type(operation.operation)
        if root is not None:
            total += _cost(root, operation.selection_set, fragments, variables or {}, 1, set())
    return total


def _cost(
    parent: GraphQLObjectType,
    selections: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
    multiplier: int,
    spread: set[str],
) -> int:
    total = 0
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            field = parent.fields.get(selection.name.value)
            total += multiplier
            if field is None or selection.selection_set is None:
                continue
            child = get_named_type(field.type)
            if not isinstance(child, GraphQLObjectType):
                continue
            size = _first(selection, field.args.get("first"), variables)
            total += _cost(
                child, selection.selection_set, fragments, variables, multiplier * size, spread
            )
        elif isinstance(selection, InlineFragmentNode):
            total += _cost(
                parent, selection.selection_set, fragments, variables, multiplier, spread
            )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in spread or name not in fragments:
                continue  # a cycle or an unknown fragment: validation refuses it
            total += _cost(
                parent,
                fragments[name].selection_set,
                fragments,
                variables,
                multiplier,
                spread | {name},
            )
    return total


def _first(node: FieldNode, argument: Any, variables: Mapping[str, Any]) -> int:
    if argument is None:
        return 1
    value: Any = argument.default_value
    for given in node.arguments or ():
        if given.name.value != "first":
            continue
        if isinstance(given.value, IntValueNode):
            value = int(given.value.value)
        elif isinstance(given.value, VariableNode):
            value = variables.get(given.value.name.value, value)
    return value if isinstance(value, int) and value > 0 else 1


class CostLimit(SchemaExtension):
    """Refuses a query or mutation whose cost is over MAX_COST, before it runs."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            cost = query_cost(
                context.schema._schema, document, context.variables, context.operation_name
            )
            if cost > MAX_COST:
                context.result = ExecutionResult(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"query cost {cost} is over the limit of {MAX_COST}: ask for "
                            "smaller pages (first) or fewer fields",
                            extensions={"error": "QueryTooCostly", "status": 400},
                        )
                    ],
                )
        yield
