"""Password sign-in throttling that nobody can turn into a lockout of someone else.

Failures are counted per (account, client address), an IPv6 client's address being its /64
(`address_key`). The first `login_max_failures` guesses from one address at one account are
free; after that the address waits before each further guess, twice as long each time (30 s,
1 min, 2 min ... up to the window). Another address, the account holder's own included, is
not affected: the right password from there signs in as always.

Two ceilings sit well above that, for attacks spread over many addresses or many accounts:
past `login_account_max_failures` failures at one account in the window, only addresses the
account has signed in from before (in the last 30 days) may still try it; past
`login_ip_max_failures` failures from one address (at any accounts), that address may try
only accounts it has signed in to before. So a spray or a botnet slows down, and the holder
still gets in from where they usually do.

A guess is counted before its password is checked, so a burst of parallel guesses cannot slip
under the limit while argon2 runs. The counters live in the runtime's `CounterStore`: Redis in
production (shared by every replica), in process when embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Network, ip_address

from apiary.config import Settings
from apiary.errors import TooManyRequests
from apiary.kv import CounterStore

BACKOFF_BASE_S = 30
KNOWN_ADDRESS_TTL_S = 30 * 86_400  # how long a successful sign-in vouches for its address
# Told to whoever is throttled: the account holder, signing in from anywhere else, is not.
NOT_LOCKED = "the account itself is not locked: sign-ins from other addresses are not affected"


def address_key(ip: str | None) -> str:
    """The client a throttle counts by: an IPv4 address, or an IPv6 address's /64, which
    one subscriber owns whole and can rotate through (RFC 7421), so counting its single
    addresses would give it 2**64 fresh starts. An IPv4-mapped IPv6 address counts as its
    IPv4 address."""
    if ip is None:
        return "-"
    try:
        address = ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


def backoff_s(failures: int, *, limit: int, window_s: int) -> int:
    """How long an address waits before its next guess, after `failures` wrong ones at one
    account (0 while under `limit`): doubling from 30 s, never longer than the window."""
    if failures < limit:
        return 0
    return int(min(window_s, BACKOFF_BASE_S * 2 ** min(failures - limit, 20)))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a guess was refused, for the audit log: `pair`, `account` or `address`. `first`:
    the first refusal of its kind while this wait lasts, the one worth an audit entry (one
    per refused guess would let a flood of guesses flood the log too)."""

    reason: str
    retry_after_s: int
    detail: str
    first: bool = True

    def error(self) -> TooManyRequests:
        return TooManyRequests(self.detail, retry_after_s=self.retry_after_s, keep_changes=True)


class LoginThrottle:
    def __init__(self, counters: CounterStore, settings: Settings) -> None:
        self._counters = counters
        self._limit = settings.login_max_failures
        self._window_s = settings.login_failure_window_s
        self._account_limit = settings.login_account_max_failures
        self._ip_limit = settings.login_ip_max_failures

    @staticmethod
    def _keys(email: str, ip: str | None) -> tuple[str, str, str, str, str]:
        address = address_key(ip)
        return (
            f"login:pair:{email}:{address}",  # guesses from this address at this account
            f"login:wait:{email}:{address}",  # set while this address must wait
            f"login:account:{email}",  # failures at this account, from anywhere
            f"login:ip:{address}",  # failures from this address, at any account
            f"login:known:{email}:{address}",  # this address signed in to this account
        )

    async def admit(self, email: str, ip: str | None) -> Refusal | None:
        """Count a guess at `email` from `ip`; a `Refusal` when it must not be checked."""
        refusal = await self._admit(email, ip)
        if refusal is None:
            return None
        noted = f"login:refused:{refusal.reason}:{email}:{address_key(ip)}"
        first = await self._counters.set_if_absent(noted, 1, ttl_s=refusal.retry_after_s)
        return replace(refusal, first=first)

    async def _admit(self, email: str, ip: str | None) -> Refusal | None:
        pair, wait, account, address, known = self._keys(email, ip)
        counters = self._counters
        vouched = (await counters.get(known))[0] > 0
        if not vouched:
            failures, ttl = await counters.get(account)
            if failures >= self._account_limit:
                return Refusal(
                    "account",
                    ttl,
                    "too many failed sign-ins at this account from many addresses: for now "
                    "it accepts sign-ins only from addresses it has used before; try again "
                    "later or from one of those",
                )
            failures, ttl = await counters.get(address)
            if failures >= self._ip_limit:
                return Refusal(
                    "address",
                    ttl,
                    f"too many failed sign-ins from your address; try again later ({NOT_LOCKED})",
                )
        guesses = await counters.incr(pair, ttl_s=self._window_s)
        if guesses >= self._limit:
            # Past the free guesses, each one claims the wait before the next: of a burst,
            # one claims it and the rest are refused, whatever order they arrive in.
            delay = backoff_s(guesses, limit=self._limit, window_s=self._window_s)
            if not await counters.set_if_absent(wait, 1, ttl_s=delay):
                await counters.decr(pair)  # a refused guess was not a guess
                _, retry_after = await counters.get(wait)
                return Refusal(
                    "pair",
                    max(retry_after, 1),
                    "too many failed sign-ins at this account from your address; try again "
                    f"in {max(retry_after, 1)} s ({NOT_LOCKED})",
                )
        return None

    async def failed(self, email: str, ip: str | None) -> None:
        _, _, account, address, _ = self._keys(email, ip)
        await self._counters.incr(account, ttl_s=self._window_s)
        await self._counters.incr(address, ttl_s=self._window_s)

    async def succeeded(self, email: str, ip: str | None) -> None:
        """The right password: this address starts afresh and vouches for itself."""
        pair, wait, _, _, known = self._keys(email, ip)
        await self._counters.delete(pair)
        await self._counters.delete(wait)
        await self._counters.delete(known)  # renewed for another 30 days from now
        await self._counters.set_if_absent(known, 1, ttl_s=KNOWN_ADDRESS_TTL_S)
