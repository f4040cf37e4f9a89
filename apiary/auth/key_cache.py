"""A short-lived, in-process cache of verified API keys, so a gateway call does not query
the database to learn who is calling.

An entry lives `TTL_S` seconds. Any change that can end a key's access in this process
(revoking a key, removing or demoting a member, suspending a tenant) clears the whole
cache at once via `invalidate()`, so on the replica that made the change the key stops at
once; other replicas notice within `TTL_S`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from apiary.authz.permissions import Role

TTL_S = 5.0
MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    expires_at: datetime | None


_entries: dict[str, tuple[float, VerifiedKey]] = {}


def get(key_digest: str) -> VerifiedKey | None:
    found = _entries.get(key_digest)
    if found is None:
        return None
    if found[0] <= time.monotonic():
        _entries.pop(key_digest, None)
        return None
    return found[1]


def put(key_digest: str, key: VerifiedKey) -> None:
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key_digest] = (time.monotonic() + TTL_S, key)


def invalidate() -> None:
    _entries.clear()
