"""Password hashing with argon2id, off the event loop (a hash takes tens of milliseconds)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a miss costs as long as a hit.
# (A fixed hash with the default parameters: hashing at import cost 64 MiB and 50 ms at start.)
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$rejq8GLGEKva3MVCZZ034w$"
    "Kpipn1XSAdwWoeH77mCSyAvWleim0qQszAUdWfzb7HU"
)

MIN_PASSWORD_LENGTH = 10


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
