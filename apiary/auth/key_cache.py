"""A short-lived, in-process cache of verified API keys, so a gateway call does not query
the database to learn who is calling.

An entry lives `TTL_S` seconds. Any change that can end a key's access (revoking a key,
removing or demoting a member, suspending a tenant) clears the whole cache of the process
that made it when its transaction commits (`keys_changed`), so on that replica the key
stops at once; other replicas notice within `TTL_S`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.permissions import Role

TTL_S = 5.0
MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    expires_at: datetime | None


class KeyCache:
    """One process's cache, held by its runtime (`runtime.key_cache`)."""

    def __init__(self, *, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, VerifiedKey]] = {}

    def get(self, key_digest: str) -> VerifiedKey | None:
        found = self._entries.get(key_digest)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._entries.pop(key_digest, None)
            return None
        return found[1]

    def put(self, key_digest: str, key: VerifiedKey) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key_digest] = (time.monotonic() + self._ttl_s, key)

    def invalidate(self) -> None:
        self._entries.clear()


# Services mark the transaction (they know no cache); the request's session dependency
# clears its process's cache once the transaction has committed. Cleared before the commit,
# a request racing it could load the key as it still was and cache it for TTL_S.
_KEYS_CHANGED = "apiary.keys_changed"


def keys_changed(session: AsyncSession) -> None:
    """Note that this transaction ends some API key's access (a key revoked, a member
    removed or demoted, a tenant suspended)."""
    session.info[_KEYS_CHANGED] = True


def changed_keys(session: AsyncSession) -> bool:
    """Whether `session`'s transaction ended some key's access (the mark is taken)."""
    return bool(session.info.pop(_KEYS_CHANGED, False))
