"""Password hashing: what an attacker timing sign-ins or reading the users table would see."""

from __future__ import annotations

from apiary.auth import passwords


async def test_a_hash_verifies_its_password_only() -> None:
    stored = await passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify_password(stored, "correct horse battery")
    assert not await passwords.verify_password(stored, "correct horse battery!")


async def test_an_unknown_account_costs_the_same_work_as_a_known_one() -> None:
    # The dummy hash checked for a missing account must use the live parameters, or a miss
    # would answer measurably faster (or slower) than a wrong password.
    assert not passwords._hasher.check_needs_rehash(passwords._DUMMY_HASH)
    assert not await passwords.verify_password(None, "anything at all")
