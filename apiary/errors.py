"""Typed domain errors and the one handler that turns them into JSON responses.

Services raise these; nothing below the routes raises `HTTPException`. Every error body is
`{"error": "<Name>", "detail": "<what is wrong>"}`; no stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from apiary.db import UNAVAILABLE_RETRY_AFTER_S, database_unreachable

log = logging.getLogger("apiary.errors")


class ApiaryError(Exception):
    """A domain error. `keep_changes`: the request's transaction still commits (a failed
    sign-in is refused, and its audit entry and revocations must stay written)."""

    status_code: ClassVar[int] = 400

    def __init__(
        self, detail: str, *, headers: dict[str, str] | None = None, keep_changes: bool = False
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.keep_changes = keep_changes

    @property
    def name(self) -> str:
        return type(self).__name__


class BadRequest(ApiaryError):
    status_code = 400


class Unauthorized(ApiaryError):
    status_code = 401

    def __init__(
        self, detail: str = "authentication required", *, keep_changes: bool = False
    ) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, keep_changes=keep_changes)


class PaymentRequired(ApiaryError):
    """A budget is spent: the call would cost money the tenant has not allowed."""

    status_code = 402


class Forbidden(ApiaryError):
    status_code = 403


class NotFound(ApiaryError):
    status_code = 404


class Conflict(ApiaryError):
    status_code = 409


class Unprocessable(ApiaryError):
    status_code = 422


class TooManyRequests(ApiaryError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after_s: int, keep_changes: bool = False) -> None:
        super().__init__(
            detail, headers={"Retry-After": str(max(1, retry_after_s))}, keep_changes=keep_changes
        )
        self.retry_after_s = retry_after_s


class ServiceUnavailable(ApiaryError):
    status_code = 503


class ErrorBody(BaseModel):
    """Every error Apiary answers outside /v1."""

    error: str = Field(description="The error's name, e.g. NotFound or ValidationError")
    detail: str = Field(description="What is wrong, for a person to read")


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """Every error under /v1, in OpenAI's shape, so OpenAI SDKs raise the matching exception."""

    error: OpenAIError


class AnthropicError(BaseModel):
    type: str = Field(description="invalid_request_error, authentication_error, ...")
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error under /v1/messages, in Anthropic's shape, so Anthropic SDKs raise the
    matching exception."""

    type: str = Field(description="always 'error'")
    error: AnthropicError


STATUS_DESCRIPTIONS = {
    400: "Bad request: the body is not what the operation takes",
    401: "Not authenticated: no credential, or one that is not valid",
    402: "A budget is spent, or the plan's entitlement is reached (EntitlementExceeded)",
    403: "Not permitted: the caller's role or key may not do this",
    404: "Not found (a resource of another tenant is not found either)",
    409: "Conflicts with what exists",
    413: "Too large",
    422: "A parameter or a field of the body is not valid: the detail names it",
    429: "Too many requests: wait for Retry-After seconds",
    502: "The model provider failed",
    503: "A dependency is unavailable: retry after Retry-After seconds",
    504: "The model provider did not answer in time",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the errors particular to it (see apiary/openapi.py for
    those that follow from every operation's shape)."""
    return {
        status: {"model": ErrorBody, "description": STATUS_DESCRIPTIONS[status]}
        for status in statuses
    }


def error_response(
    status: int, error: str, detail: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# OpenAI's error `type` for each status, so OpenAI SDKs raise their matching exception.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# Anthropic's error `type` for each status, so Anthropic SDKs raise their matching exception.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, detail: str) -> dict[str, object]:
    """Anthropic's error document (under /v1/messages, where Anthropic SDKs are the clients)."""
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": detail},
    }


def render(
    request: Request,
    status: int,
    error: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Apiary's error shape, or OpenAI's under /v1 where OpenAI SDKs are the clients (and
    Anthropic's under /v1/messages)."""
    if request.url.path.startswith("/v1/messages"):
        return JSONResponse(anthropic_error(status, detail), status_code=status, headers=headers)
    if request.url.path.startswith("/v1/"):
        return JSONResponse(
            openai_error(status, error, detail), status_code=status, headers=headers
        )
    return error_response(status, error, detail, headers=headers)


def openai_error(status: int, error: str, detail: str) -> dict[str, dict[str, str | None]]:
    """OpenAI's error document, so OpenAI SDKs raise the matching exception."""
    return {
        "error": {
            "message": detail,
            "type": _OPENAI_TYPES.get(status, "api_error"),
            "param": None,
            "code": error,
        }
    }


def _field_path(location: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in location)


def _redis_unreachable(error: BaseException) -> bool:
    """Redis down or restarting. Limits and the sign-in throttle fail closed on it: their
    counters are what make them hold across replicas (see docs/architecture.md)."""
    redis_errors = sys.modules.get("redis.exceptions")  # not loaded: not a Redis error
    return redis_errors is not None and isinstance(
        error, (redis_errors.ConnectionError, redis_errors.TimeoutError)
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_apiary_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiaryError)
        return render(request, exc.status_code, exc.name, exc.detail, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{_field_path(err['loc'])}: {err['msg']}" for err in exc.errors()]
        return render(request, 422, "ValidationError", "; ".join(problems))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        name = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}.get(
            exc.status_code, "HTTPError"
        )
        return render(
            request, exc.status_code, name, str(exc.detail), headers=dict(exc.headers or {})
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # An outage, not a bug: 503, and the client comes back (OpenAI's SDKs do by themselves).
        outage = (
            "the database"
            if database_unreachable(exc)
            else "Redis (limits, sign-in throttle)"
            if _redis_unreachable(exc)
            else None
        )
        if outage is not None:
            # The class only: a statement's parameters (digests, hashes) stay out of logs.
            log.warning("%s is unreachable (%s); answered 503", outage, type(exc).__name__)
            return render(
                request,
                503,
                "ServiceUnavailable",
                f"{outage} is unavailable; retry after Retry-After seconds",
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
            )
        # Starlette answers unhandled errors outside our middleware, so the request id is
        # passed explicitly to the log line and the response.
        request_id = str(getattr(request.state, "request_id", "-"))
        log.exception("unhandled error", exc_info=exc, extra={"request_id": request_id})
        return render(
            request,
            500,
            "InternalError",
            f"internal error (request id {request_id})",
            headers={"x-request-id": request_id},
        )

    async def on_integrity_error(request: Request, exc: Exception) -> JSONResponse:
        # Two requests racing to create the same thing: the loser gets a conflict, not a 500.
        return render(request, 409, "Conflict", "this conflicts with an existing record")

    app.add_exception_handler(ApiaryError, on_apiary_error)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class ErrorAnsweringMiddleware(ServerErrorMiddleware):
    """Starlette's outermost error middleware, except that an error it has answered in full
    stays answered.

    Starlette answers an unhandled error with the 500 handler, then raises it on to the
    server "so that the server can log it"; uvicorn, seeing an error after a response began,
    closes the connection without a `Connection: close`, and a client's next request on that
    pooled connection fails with a reset. The handler (`on_unexpected`) has logged the error
    already, so it goes no further. An error that cuts a response short (a stream that fails
    midway) is still raised, and the server rightly closes that connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if response_started or self.debug or self.handler is None:
                raise
            # The handler is `on_unexpected` (async, answers any request).
            handler = cast("Callable[[Request, Exception], Awaitable[Response]]", self.handler)
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)
