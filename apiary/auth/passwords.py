"""Password hashing with argon2id, off the event loop (a hash takes tens of milliseconds)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline (m=19 MiB, t=2, p=1) rather than argon2-cffi's default 64 MiB:
# the same resistance by OWASP's table, and each sign-in in flight holds its memory, which on
# a small server is the difference between ten concurrent sign-ins taking 190 MiB or 640.
# Hashes made with other parameters still verify (the parameters are in the hash).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the account does not exist, so a miss costs as long as a hit.
# (A fixed hash with the same parameters, so start-up does no hashing.)
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$gN/w19Z78jJ7NA3x/4gWxA$"
    "uGwwsyJkAy/d/n56QvuzYcWV82lF7LSJxv3fbK00Nqc"
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
