"""OpenAI's wire format: OpenAI itself, and Together, Moonshot (Kimi) and any
OpenAI-compatible server (vLLM, Ollama), which speak it too.

Non-streaming responses are forwarded as the upstream's bytes; only `usage` is read.
Streams are forwarded chunk by chunk; the adapter always asks for usage in the stream and
drops that final chunk again when the client did not ask for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from apiary.gateway.config import ProviderConfig
from apiary.gateway.http import HttpClient, HttpError, Response
from apiary.gateway.providers.base import (
    JSON,
    Completion,
    ProviderError,
    StreamState,
    Usage,
    classify_status,
    post_json,
    read_body,
    retry_after,
)

# Kimi K2.6 and K3 refuse custom sampling parameters; sending them is an error upstream.
_FIXED_SAMPLING_MODELS = ("kimi-k2.6", "kimi-k3")
_SAMPLING_KEYS = ("temperature", "top_p")


def parse_usage(raw: Mapping[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def error_from_openai(status: int, body: bytes, headers: Any, provider: str) -> ProviderError:
    message, code = f"upstream returned HTTP {status}", None
    try:
        error = orjson.loads(body).get("error") or {}
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code")
        elif isinstance(error, str):
            message = error
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return ProviderError(
        classify_status(status, message, code=str(code) if code else None),
        message,
        status=status,
        retry_after_s=retry_after(headers),
        provider=provider,
    )


class OpenAIProvider:
    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http
        self.timeout_s = config.timeout_s

    # -- the parts that differ between OpenAI-format providers -----------------------

    def url(self, model: str, path: str) -> str:
        return f"{self.config.url}/{path}"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.config.api_key is not None:
            headers["authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        return headers

    def body(self, request: JSON, model: str) -> JSON:
        body = {**request, "model": model}
        if self.config.kind == "moonshot" and model.startswith(_FIXED_SAMPLING_MODELS):
            for key in _SAMPLING_KEYS:
                body.pop(key, None)
        return body

    # -- calls ------------------------------------------------------------------------

    async def _post(self, url: str, body: JSON) -> Response:
        return await post_json(
            self.http,
            url,
            body,
            headers=await self.auth_headers(),
            timeout_s=self.timeout_s,
            provider=self.config.name,
            parse_error=error_from_openai,
        )

    async def auth_headers(self) -> dict[str, str]:
        return self.headers()

    async def complete(self, request: JSON, model: str) -> Completion:
        return await self._complete(self.url(model, "chat/completions"), self.body(request, model))

    async def embed(self, request: JSON, model: str) -> Completion:
        return await self._complete(self.url(model, "embeddings"), {**request, "model": model})

    async def _complete(self, url: str, body: JSON) -> Completion:
        raw = await read_body(await self._post(url, body), self.config.name)
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(
                "server", "upstream sent invalid JSON", provider=self.config.name
            ) from None
        return Completion(
            body=raw, usage=parse_usage(document.get("usage")), model=str(document.get("model", ""))
        )

    async def stream(self, request: JSON, model: str, state: StreamState) -> AsyncIterator[bytes]:
        body = self.body(request, model)
        wants_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        body["stream"] = True
        body["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
        response = await self._post(self.url(model, "chat/completions"), body)
        try:
            async for payload in sse_data(response, self.config.name):
                if payload == b"[DONE]":
                    break
                chunk = orjson.loads(payload)
                if chunk.get("usage"):
                    state.usage = parse_usage(chunk["usage"])
                    if not chunk.get("choices") and not wants_usage:
                        continue
                    if not wants_usage:
                        chunk.pop("usage")
                        payload = orjson.dumps(chunk)
                state.model = state.model or str(chunk.get("model", ""))
                if not state.first_token and _has_token(chunk):
                    state.first_token = True
                yield payload
        finally:
            response.release()


def _has_token(chunk: JSON) -> bool:
    """Whether a chunk carries output (text or a tool call), not just a role or a filter note."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
            return True
    return False


async def sse_data(response: Response, provider: str) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent-event stream, one per event."""
    try:
        async for line in response.lines():
            if line.startswith(b"data:"):
                yield line[5:].strip()
    except TimeoutError:
        raise ProviderError("timeout", "upstream timed out mid-stream", provider=provider) from None
    except HttpError:
        raise ProviderError(
            "connection", "upstream dropped the stream", provider=provider
        ) from None
