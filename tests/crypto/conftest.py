"""Encryption at rest in tests: the session's app with a KEK configured for one test.

The app's keyring is the one its knowledge and memory code use, so giving it KEKs for a
test turns encryption on along the real upload, ingestion and memory paths; the keyring is
back to "not configured" afterwards, as the other tests expect."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest

from apiary.crypto.keks import Keks, LocalKeks
from apiary.crypto.keyring import Keyring
from apiary.runtime import Runtime


def new_key() -> bytes:
    return os.urandom(32)


def kek_value(kid: str, key: bytes) -> str:
    """The form APIARY_ENCRYPTION__KEK takes."""
    return f"{kid}:{base64.b64encode(key).decode()}"


def local(**keys: bytes) -> Keks:
    """Environment KEKs by kid, the first one wrapping."""
    return Keks([LocalKeks(dict(keys))])


def fresh_keyring(runtime: Runtime, keks: Keks | None) -> Keyring:
    """What another process (or this one restarted) with these KEKs holds: nothing cached."""
    return Keyring(runtime.session_factory, keks)


@pytest.fixture
def kek_one() -> bytes:
    return new_key()


@pytest.fixture
def encrypted(runtime: Runtime, kek_one: bytes) -> Iterator[Keyring]:
    """The app's keyring with KEK "k1" configured, for this test."""
    keyring = runtime.encryption
    keyring.keks = local(k1=kek_one)
    try:
        yield keyring
    finally:
        keyring.keks = None
        keyring.forget()
