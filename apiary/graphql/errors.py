"""What a GraphQL error shows: REST's words, never internals.

A domain error keeps its detail and says its name and HTTP status in `extensions`, as
REST's `{"error", "detail"}` body does (with Apollo's `code` beside them); an error in the
query itself (a syntax error, an unknown field, a limit) is the client's to read; anything
else is "internal error", with the request id, and its traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from sqlalchemy.exc import IntegrityError
from strawberry.extensions import SchemaExtension

from apiary.db import database_unreachable
from apiary.errors import ApiaryError
from apiary.observability.logging import request_context

log = logging.getLogger("apiary.graphql")


def expected(error: GraphQLError) -> bool:
    """Whether the client may read this error as it is (no bug behind it)."""
    original = error.original_error
    return original is None or isinstance(original, (ApiaryError, GraphQLError))


def shaped(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    extensions: dict[str, Any]
    if original is None or isinstance(original, GraphQLError):
        message = error.message
        # Strawberry's depth limiter says it in words only; name it as the cost limit does.
        name = "QueryTooDeep" if "exceeds maximum operation depth" in message else "GraphQLError"
        extensions = {"error": name, "status": 400, **(error.extensions or {})}
    elif isinstance(original, ApiaryError):
        message = original.detail
        extensions = {"error": original.name, "status": original.status_code}
    elif isinstance(original, IntegrityError):
        message = "this conflicts with an existing record"
        extensions = {"error": "Conflict", "status": 409}
    elif database_unreachable(original):
        message = "the database is unavailable; retry shortly"
        extensions = {"error": "ServiceUnavailable", "status": 503}
    else:
        context = request_context.get()
        request_id = getattr(context, "request_id", None) or "-"
        message = f"internal error (request id {request_id})"
        extensions = {"error": "InternalError", "status": 500}
    extensions["code"] = _code(extensions["status"], extensions["error"])
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def _code(status: int, name: str) -> str:
    """Apollo's `code` convention, which GraphQL clients and tools (schemathesis among them)
    read to tell the caller's mistake from the server's failure."""
    if name in ("GraphQLError", "QueryTooDeep", "QueryTooCostly"):
        return "GRAPHQL_VALIDATION_FAILED"
    if status == 401:
        return "UNAUTHENTICATED"
    if status == 403:
        return "FORBIDDEN"
    if status == 503:
        return "SERVICE_UNAVAILABLE"
    if status >= 500:
        return "INTERNAL_SERVER_ERROR"
    return "BAD_USER_INPUT"  # not found, invalid, conflicting, over budget: the caller's to fix


class ShapeErrors(SchemaExtension):
    """Rewrites every error of a result into the shape above, once execution is over."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [shaped(error) for error in result.errors]


def log_unexpected(errors: list[GraphQLError]) -> None:
    for error in errors:
        if not expected(error):
            log.error(
                "unhandled error in GraphQL field %s",
                ".".join(str(part) for part in error.path or ()),
                exc_info=error.original_error,
            )
