"""Counters with expiry for rate limits and throttles: in-process embedded, Redis in production."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Check(NamedTuple):  # a tuple: several are built per gateway call, a dataclass costs more
    """One counter a call must fit under: it adds `amount` (0: it only looks), and the
    counter may not pass `limit`. Fits when `value + amount <= limit`, or, for a look,
    when `value < limit`."""

    key: str
    amount: int
    limit: int
    ttl_s: int


class Change(NamedTuple):
    """Add `amount` to `key`, starting a `ttl_s` window if it is new; with `existing`, only
    if the key is there (a spend counter the store lost must be started from the ledger
    again, not from this one change; a lease's give-back has nothing to go back to in a
    window that has gone)."""

    key: str
    amount: int
    ttl_s: int
    existing: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `take` did: everything added (`refused` None; `total` is then the counter that
    had to exist, with this call's amount), or nothing, because the check at index
    `refused` did not fit (`value` is that counter's), or because the counter that had to
    exist did not (`missing`)."""

    refused: int | None = None
    value: int = 0
    missing: bool = False
    total: int = 0


TAKEN = Outcome()


def _fits(value: int, check: Check) -> bool:
    return value + check.amount <= check.limit if check.amount > 0 else value < check.limit


class CounterStore(Protocol):
    # Whether other processes count on the same counters (Redis): the limit enforcer then
    # leases blocks of them, so most calls make no round trip (apiary/limits/enforcer.py).
    shared: bool

    async def incr(self, key: str, *, ttl_s: int, amount: int = 1) -> int:
        """Add `amount` to `key`, starting a `ttl_s` window if it is new; return the total."""
        ...

    async def set_if_absent(self, key: str, value: int, *, ttl_s: int) -> bool:
        """Start `key` at `value` unless it exists; True when this call set it."""
        ...

    async def decr(self, key: str) -> None:
        """Take one off `key` (not below zero), keeping its window."""
        ...

    async def get(self, key: str) -> tuple[int, int]:
        """Return (count, seconds until the window ends); (0, 0) for an unknown key."""
        ...

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        """All of `checks` or none, atomically: if every counter fits, add every amount
        (starting each new key's window); else add nothing. With `existing` (one of the
        checks' keys), that key must already be there: when it is not, nothing is added
        and `missing` is set."""
        ...

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        """Make the changes together; each key's total, in order (None: an `existing`
        change whose key was not there, so nothing was added)."""
        ...

    def add_soon(self, changes: Sequence[Change]) -> None:
        """`add`, for a caller that needs no totals: made with the next round trip, which
        this call does not wait for. Still in order: a `take` or `add` this process makes
        afterwards sees these changes. A failure is logged, not raised."""
        ...

    async def delete(self, key: str) -> None: ...

    async def forget_containing(self, needles: Sequence[str]) -> int:
        """Delete every counter whose key contains one of `needles` (the ids of a tenant
        being deleted, and of its keys); return how many went."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryCounterStore:
    """One process's counters; expired windows are dropped lazily and by a periodic sweep.

    No lock: each method runs to its end without awaiting, so on one event loop no other
    coroutine can interleave with it."""

    shared = False

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._ops = 0

    def _sweep(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}

    async def incr(self, key: str, *, ttl_s: int, amount: int = 1) -> int:
        return self._add(key, amount, ttl_s, time.monotonic())

    async def set_if_absent(self, key: str, value: int, *, ttl_s: int) -> bool:
        now = time.monotonic()
        found = self._counts.get(key)
        if found is not None and found[1] > now:
            return False
        self._counts[key] = (value, now + ttl_s)
        return True

    async def decr(self, key: str) -> None:
        count, expires = self._counts.get(key, (0, 0.0))
        if count > 1 and expires > time.monotonic():
            self._counts[key] = (count - 1, expires)
        else:
            self._counts.pop(key, None)

    async def get(self, key: str) -> tuple[int, int]:
        count, expires = self._counts.get(key, (0, 0.0))
        remaining = expires - time.monotonic()
        return (count, int(remaining) + 1) if remaining > 0 else (0, 0)

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        now = time.monotonic()
        counts = self._counts
        if existing is not None and counts.get(existing, (0, 0.0))[1] <= now:
            return Outcome(missing=True)
        for index, check in enumerate(checks):
            count, expires = counts.get(check.key, (0, 0.0))
            value = count if expires > now else 0
            if not _fits(value, check):
                return Outcome(refused=index, value=value)
        total = 0
        for check in checks:
            added = self._add(check.key, check.amount, check.ttl_s, now) if check.amount else None
            if check.key == existing:
                total = added if added is not None else counts[check.key][0]
        return Outcome(total=total) if total else TAKEN

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        now = time.monotonic()
        counts = self._counts
        return [
            None
            if change.existing and counts.get(change.key, (0, 0.0))[1] <= now
            else self._add(change.key, change.amount, change.ttl_s, now)
            for change in changes
        ]

    def add_soon(self, changes: Sequence[Change]) -> None:
        now = time.monotonic()
        for change in changes:
            if not change.existing or self._counts.get(change.key, (0, 0.0))[1] > now:
                self._add(change.key, change.amount, change.ttl_s, now)

    def _add(self, key: str, amount: int, ttl_s: int, now: float) -> int:
        self._ops += 1
        if self._ops % 1024 == 0:
            self._sweep(now)
        count, expires = self._counts.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl_s
        self._counts[key] = (count + amount, expires)
        return count + amount

    async def delete(self, key: str) -> None:
        self._counts.pop(key, None)

    async def forget_containing(self, needles: Sequence[str]) -> int:
        doomed = [key for key in self._counts if any(needle in key for needle in needles)]
        for key in doomed:
            del self._counts[key]
        return len(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._counts.clear()
