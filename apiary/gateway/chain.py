"""The gateway's call path: route, then walk the chain with retries, breakers and queues.

For each target in the decided chain: skip it while its breaker is open; wait for a turn
under its `max_concurrency`/`rpm`; call it, retrying retryable errors with backoff that
honours `Retry-After`; on an error that warrants it (429, 5xx, timeout, connection,
context length) move to the next target. A stream falls back only until its first chunk
arrives: after that the client has seen output from this model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from apiary.gateway import catalog
from apiary.gateway.config import (
    LOCAL_EMBEDDING_MODEL,
    LOCAL_MODEL,
    GatewayConfig,
    ProviderConfig,
)
from apiary.gateway.http import HttpClient
from apiary.gateway.providers.base import (
    JSON,
    Completion,
    Provider,
    ProviderError,
    StreamState,
    Usage,
)
from apiary.gateway.registry import build_provider
from apiary.gateway.resilience import CircuitBreaker, ProviderLimiter, backoff_s
from apiary.gateway.router import Decision, Router, Target
from apiary.observability import tracing


@dataclass
class ProviderHandle:
    provider: Provider
    breaker: CircuitBreaker
    limiter: ProviderLimiter


@dataclass
class CallResult:
    """What a finished call produced, and what the ledger needs to know about it."""

    decision: Decision
    target: Target | None = None
    completion: Completion | None = None
    usage: Usage | None = None
    fallback_path: list[str] = field(default_factory=list)  # "provider/model: why" per skip
    queue_s: float = 0.0
    upstream_s: float = 0.0
    ttft_s: float | None = None
    error: ProviderError | None = None

    @property
    def attempts(self) -> int:
        return len(self.fallback_path) + (1 if self.target else 0)


def _record_attempt(
    handle: ProviderHandle,
    target: Target,
    operation: str,
    started_ns: int,
    *,
    model: str | None = None,
    error: BaseException | None = None,
    ttft_s: float | None = None,
) -> None:
    """One attempt on one provider (its retries included), recorded once it is over as a
    child of the gateway call, from `started_ns` (`time.time_ns()`) to now. A provider's
    failure is named on it (`tracing.record_error`, with the error's kind)."""
    attributes: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": handle.provider.config.kind,
        "gen_ai.request.model": target.model,
        "apiary.provider": target.provider,
    }
    if model is not None:
        attributes["gen_ai.response.model"] = model
    if ttft_s is not None:
        attributes["apiary.ttft_s"] = ttft_s
    with tracing.child(
        "apiary.gateway.attempt", kind=tracing.SpanKind.CLIENT, attributes=attributes
    ) as span:
        tracing.started_at(span, started_ns)
        if isinstance(error, ProviderError):
            tracing.record_error(span, error.kind)
        elif isinstance(error, Exception):
            described = f"{type(error).__name__}: {error}"
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, described))


class _Attempt:
    """Times one attempt on one provider (its retries included), for tracing on in a
    request not `dropped()`, and records it (`_record_attempt`) unless it is the call's
    first and answered: such a call, the common one, is described by its own span alone
    (which provider answered, the model, the upstream time: `_describe_call`), one span
    fewer for every kept call to record and export (docs/benchmarks.md, issue 17). A call
    that did anything else (a provider failed or was passed over) shows one span per
    provider tried, the one that answered included."""

    __slots__ = ("_first", "_handle", "_operation", "_started", "_target", "model")

    def __init__(
        self, handle: ProviderHandle, target: Target, operation: str, result: CallResult
    ) -> None:
        self._handle = handle
        self._target = target
        self._operation = operation
        self._first = not result.fallback_path  # no provider tried or passed over before
        self.model: str | None = None  # the model that answered, once one has

    def __enter__(self) -> _Attempt:
        self._started = time.time_ns()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if error is None and self._first:
            return
        _record_attempt(
            self._handle,
            self._target,
            self._operation,
            self._started,
            model=self.model,
            error=error,
        )


def _skipped(result: CallResult, target: Target, why: str) -> None:
    """A provider passed over without a call (its breaker open)."""
    result.fallback_path.append(f"{target.key}: {why}")
    if tracing.TRACER is not None and not tracing.dropped():
        with tracing.child(
            "apiary.gateway.attempt",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "gen_ai.request.model": target.model,
                "apiary.provider": target.provider,
                "apiary.skipped": why,
            },
        ):
            pass


_NO_SPAN = nullcontext()


class AllProvidersFailed(Exception):
    def __init__(self, result: CallResult) -> None:
        last = result.error
        super().__init__(last.message if last else "no provider could serve the request")
        self.result = result


def default_config(config: GatewayConfig) -> GatewayConfig:
    """With no provider configured, the bundled local models serve everything: chat by
    SmolLM2, embeddings by MiniLM."""
    if config.providers:
        return config
    provider, model = LOCAL_MODEL.split("/")
    embedder = LOCAL_EMBEDDING_MODEL.split("/")[1]
    local = ProviderConfig(name=provider, kind="local", models=[model, embedder], max_concurrency=1)
    return GatewayConfig(providers=[local], routes=config.routes, prices=config.prices)


class BreakerListener(Protocol):
    """Told when a provider's breaker opens in this process (an alert: apiary/alerts)."""

    def breaker_opened(self, provider: str, *, failures: int, cooldown_s: float) -> None: ...


def _told(listener: BreakerListener | None, provider: str) -> Callable[[int, float], None] | None:
    if listener is None:
        return None
    return lambda failures, cooldown_s: listener.breaker_opened(
        provider, failures=failures, cooldown_s=cooldown_s
    )


class ProviderChain:
    def __init__(
        self,
        config: GatewayConfig,
        http: HttpClient,
        *,
        on_breaker_open: BreakerListener | None = None,
    ) -> None:
        self.config = default_config(config)
        self.http = http
        self.handles = {
            p.name: ProviderHandle(
                provider=build_provider(p, http),
                breaker=CircuitBreaker(on_open=_told(on_breaker_open, p.name)),
                limiter=ProviderLimiter(max_concurrency=p.max_concurrency, rpm=p.rpm),
            )
            for p in self.config.providers
        }
        self.router = Router(self.config, {p.name: list(p.models) for p in self.config.providers})

    async def close(self) -> None:
        """Release what providers hold beyond the shared HTTP client (Azure AD credentials)."""
        for handle in self.handles.values():
            aclose = getattr(handle.provider, "aclose", None)
            if aclose is not None:
                await aclose()

    def price(self, target: Target) -> catalog.ModelInfo | None:
        return catalog.lookup(target.provider, target.model, overrides=self.config.prices)

    async def complete(self, request: JSON, decision: Decision) -> CallResult:
        result = CallResult(decision=decision)
        for target in decision.chain:
            handle = self.handles[target.provider]
            if not handle.breaker.allow():
                _skipped(result, target, "circuit open")
                continue
            try:
                if tracing.TRACER is None or tracing.dropped():
                    completion = await self._call_with_retries(handle, target, request, result)
                else:
                    with _Attempt(handle, target, "chat", result) as attempt:
                        completion = await self._call_with_retries(handle, target, request, result)
                        attempt.model = completion.model
            except ProviderError as error:
                result.error = error
                result.fallback_path.append(f"{target.key}: {error.kind}")
                if not error.falls_back:
                    break
                continue
            result.target, result.completion, result.usage = target, completion, completion.usage
            return result
        raise AllProvidersFailed(result)

    async def _call_with_retries(
        self, handle: ProviderHandle, target: Target, request: JSON, result: CallResult
    ) -> Completion:
        attempt = 0
        while True:
            async with handle.limiter.slot() as waited:
                result.queue_s += waited
                started = time.perf_counter()
                try:
                    completion = await handle.provider.complete(request, target.model)
                except ProviderError as error:
                    result.upstream_s += time.perf_counter() - started
                    handle.breaker.record(error)
                    pause = backoff_s(attempt, error.retry_after_s) if error.retryable else None
                    if pause is None or attempt >= handle.provider.config.max_retries:
                        raise
                    if not handle.breaker.allow():
                        raise
                else:
                    result.upstream_s += time.perf_counter() - started
                    handle.breaker.record_success()
                    return completion
            attempt += 1
            await asyncio.sleep(pause)

    async def stream(
        self, request: JSON, decision: Decision
    ) -> tuple[CallResult, AsyncIterator[bytes]]:
        """Open a stream on the first target that produces its first token.

        Chunks before the first token (role, filter notes) are held back, so a target that
        fails before producing output is replaced by the next one without the client
        noticing. Returns the result (completed as the stream is consumed) and the chunks.
        """
        result = CallResult(decision=decision)
        for target in decision.chain:
            handle = self.handles[target.provider]
            if not handle.breaker.allow():
                _skipped(result, target, "circuit open")
                continue
            state = StreamState()
            slot = handle.limiter.slot()
            result.queue_s += await slot.__aenter__()
            started = time.perf_counter()
            started_ns = time.time_ns() if tracing.TRACER is not None else 0
            chunks = aiter(handle.provider.stream(request, target.model, state))
            held: list[bytes] = []
            try:
                async for chunk in chunks:
                    held.append(chunk)
                    if state.first_token:
                        break
            except ProviderError as error:
                await slot.__aexit__(None, None, None)
                handle.breaker.record(error)
                if tracing.TRACER is not None and not tracing.dropped():
                    _record_attempt(handle, target, "chat", started_ns, error=error)
                result.error = error
                result.fallback_path.append(f"{target.key}: {error.kind}")
                if not error.falls_back:
                    break
                continue
            except BaseException:
                # A caller that gave up (cancelled) or an unexpected error must still give the
                # turn back: with `max_concurrency: 1` one leaked turn stops the provider for
                # every tenant until a restart.
                await slot.__aexit__(None, None, None)
                raise
            result.target = target
            result.ttft_s = time.perf_counter() - started
            # Recorded once the first token is in (with the time to it), the stream going on,
            # when the call fell back; else the call's span says it (`_describe_call`).
            if result.fallback_path and tracing.TRACER is not None and not tracing.dropped():
                _record_attempt(handle, target, "chat", started_ns, ttft_s=result.ttft_s)
            return result, self._rest(held, chunks, handle, state, result, slot, started)
        raise AllProvidersFailed(result)

    async def _rest(
        self,
        held: list[bytes],
        chunks: AsyncIterator[bytes],
        handle: ProviderHandle,
        state: StreamState,
        result: CallResult,
        slot: AbstractAsyncContextManager[float],
        started: float,
    ) -> AsyncIterator[bytes]:
        try:
            for chunk in held:
                yield chunk
            async for chunk in chunks:
                yield chunk
            handle.breaker.record_success()
        except ProviderError as error:
            handle.breaker.record(error)
            result.error = error
            raise
        finally:
            result.usage = state.usage
            result.upstream_s = time.perf_counter() - started
            await slot.__aexit__(None, None, None)

    async def embed(self, request: JSON, decision: Decision) -> CallResult:
        result = CallResult(decision=decision)
        for target in decision.chain:
            handle = self.handles[target.provider]
            try:
                traced = tracing.TRACER is not None and not tracing.dropped()
                with _Attempt(handle, target, "embeddings", result) if traced else _NO_SPAN:
                    async with handle.limiter.slot() as waited:
                        result.queue_s += waited
                        started = time.perf_counter()
                        completion = await handle.provider.embed(request, target.model)
                        result.upstream_s += time.perf_counter() - started
            except ProviderError as error:
                result.error = error
                result.fallback_path.append(f"{target.key}: {error.kind}")
                if not error.falls_back:
                    break
                continue
            result.target, result.completion, result.usage = target, completion, completion.usage
            return result
        raise AllProvidersFailed(result)
