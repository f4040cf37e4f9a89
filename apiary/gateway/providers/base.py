"""The protocol every provider adapter implements, and the errors they raise.

Requests and responses are OpenAI chat-completion JSON (as dicts going in, as bytes coming
out, ready to send to the client). An adapter for another wire format (Anthropic)
translates both ways; OpenAI-format adapters forward bytes and only parse usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from apiary.gateway.config import ProviderConfig
from apiary.gateway.http import HttpClient, HttpError, Response

JSON = dict[str, Any]

ErrorKind = Literal[
    "rate_limit", "server", "timeout", "connection", "context_length", "auth", "client"
]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # the part of prompt_tokens served from the provider's cache


@dataclass(slots=True)
class Completion:
    body: bytes  # an OpenAI `chat.completion` (or embeddings list) JSON document
    usage: Usage | None
    model: str


@dataclass(slots=True)
class StreamState:
    """Filled in while a stream is consumed: usage arrives in the last events."""

    usage: Usage | None = None
    model: str = ""
    first_token: bool = False


class ProviderError(Exception):
    """A failed upstream call, classified so the gateway knows whether to retry or fall back."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.provider = provider

    @property
    def retryable(self) -> bool:
        """Worth trying the same provider again after a pause."""
        return self.kind in ("rate_limit", "server", "timeout", "connection")

    @property
    def blames_provider(self) -> bool:
        """Whether the failure says the provider is unwell. A request refused for what it
        contains (a 400-class answer, a prompt too long) says nothing about the provider,
        and must never count toward its breaker: one tenant's bad requests would otherwise
        take the provider away from every tenant."""
        return self.kind not in ("client", "context_length")

    @property
    def falls_back(self) -> bool:
        """Worth trying the next model in the chain."""
        return self.retryable or self.kind == "context_length"


class Provider(Protocol):
    config: ProviderConfig

    async def complete(self, request: JSON, model: str) -> Completion: ...

    def stream(self, request: JSON, model: str, state: StreamState) -> AsyncIterator[bytes]:
        """Yield OpenAI `chat.completion.chunk` JSON documents (without SSE framing)."""
        ...

    async def embed(self, request: JSON, model: str) -> Completion: ...


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds; dates are ignored)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


def classify_status(status: int, message: str, *, code: str | None = None) -> ErrorKind:
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    if status in (401, 403):
        return "auth"
    lowered = (code or "") + " " + message.lower()
    if "context_length" in lowered or "context length" in lowered or "too long" in lowered:
        return "context_length"
    return "client"


ErrorParser = Callable[[int, bytes, Any, str], ProviderError]


async def post_json(
    http: HttpClient,
    url: str,
    body: JSON,
    *,
    headers: dict[str, str],
    timeout_s: float,
    provider: str,
    parse_error: ErrorParser,
) -> Response:
    """POST a JSON body; an HTTP error status, a timeout or a connection failure becomes a
    classified `ProviderError` (the error body read with the provider's own parser)."""
    try:
        response = await http.post(url, orjson.dumps(body), headers, timeout_s=timeout_s)
    except TimeoutError:
        raise ProviderError("timeout", "upstream timed out", provider=provider) from None
    except HttpError as error:
        raise ProviderError(
            "connection", f"cannot reach upstream: {error}", provider=provider
        ) from None
    if response.status >= 400:
        try:
            raw = await response.read()
        except (TimeoutError, HttpError):
            raw = b""
        finally:
            response.release()
        raise parse_error(response.status, raw, response.headers, provider)
    return response


async def read_body(response: Response, provider: str) -> bytes:
    """The whole body of a successful answer; a cut or late one is a `ProviderError`."""
    try:
        return await response.read()
    except TimeoutError:
        raise ProviderError("timeout", "upstream timed out", provider=provider) from None
    except HttpError:
        raise ProviderError(
            "connection", "upstream dropped the response", provider=provider
        ) from None
    finally:
        response.release()
