"""Staying up when providers do not: retry pauses, circuit breakers, and per-provider
queues for `max_concurrency` and `rpm`.

- Retries back off exponentially with full jitter (AWS architecture blog, "Exponential
  Backoff And Jitter"), and wait at least what `Retry-After` asks; a pause longer than
  `MAX_RETRY_WAIT_S` is not waited for: the gateway falls back to the next model instead.
- A breaker opens after `failure_threshold` consecutive failures and refuses calls for
  `cooldown_s`; then one trial call is let through (half-open): success closes it,
  failure opens it again.
- Limits queue callers rather than failing them: a semaphore for concurrency, and a
  sliding one-minute window for requests per minute.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

from apiary.gateway.providers.base import ProviderError

BASE_DELAY_S = 0.25
MAX_DELAY_S = 8.0
MAX_RETRY_WAIT_S = 30.0


def backoff_s(attempt: int, retry_after_s: float | None = None) -> float | None:
    """Seconds to wait before retry number `attempt` (0-based); None: do not retry here."""
    if retry_after_s is not None and retry_after_s > MAX_RETRY_WAIT_S:
        return None
    delay = random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2**attempt))  # noqa: S311
    return max(delay, retry_after_s or 0.0)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[int, float], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        # Called with (failures, cooldown_s) when a closed breaker opens; must not block.
        self._on_open = on_open
        self.cooldown_s = cooldown_s
        self._now = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._now() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def seconds_until_trial(self) -> float | None:
        """While open: how long until a trial call is let through; otherwise None."""
        if self._opened_at is None or self.state is not BreakerState.OPEN:
            return None
        return max(self.cooldown_s - (self._now() - self._opened_at), 0.0)

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_refusal(self) -> None:
        """A call refused for what it asked (see `ProviderError.blames_provider`): the
        breaker's state is unchanged, but a half-open trial spent on it is given back, or
        the breaker would wait for a verdict that never comes and refuse every call."""
        self._trial_in_flight = False

    def record(self, error: ProviderError) -> None:
        """Count a failed call against the provider only if the provider is to blame."""
        if error.blames_provider:
            self.record_failure()
        else:
            self.record_refusal()

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            was_closed = self._opened_at is None
            self._opened_at = self._now()
            if was_closed and self._on_open is not None:  # not a failed trial re-opening it
                self._on_open(self._failures, self.cooldown_s)
        self._trial_in_flight = False


class ProviderLimiter:
    """Queues calls beyond `max_concurrency` in flight or `rpm` started per minute."""

    def __init__(self, *, max_concurrency: int | None, rpm: int | None) -> None:
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._rpm = rpm
        self._starts: deque[float] = deque()
        self._rpm_lock = asyncio.Lock()
        self.waiting = 0

    async def _rate_gate(self) -> None:
        if not self._rpm:
            return
        async with self._rpm_lock:  # FIFO: callers are admitted in arrival order
            while True:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= 60.0:
                    self._starts.popleft()
                if len(self._starts) < self._rpm:
                    self._starts.append(now)
                    return
                await asyncio.sleep(60.0 - (now - self._starts[0]))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Wait for a turn; yields how long the wait took, in seconds."""
        if self._slots is None and not self._rpm:
            yield 0.0
            return
        started = time.perf_counter()
        self.waiting += 1
        try:
            await self._rate_gate()
            if self._slots is not None:
                await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield time.perf_counter() - started
        finally:
            if self._slots is not None:
                self._slots.release()
