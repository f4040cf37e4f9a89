"""Errors of encryption at rest."""

from __future__ import annotations

from apiary.errors import Conflict


class EncryptionKeyUnavailable(Conflict):
    """Data (or a tenant's data key) was encrypted under a key this process does not hold:
    a KEK removed from the configuration too early, a Key Vault key that cannot be reached,
    or a data key version that is gone. Not a 5xx: the request is fine, the stored data
    cannot be read until an operator restores the key the message names."""


class CiphertextInvalid(Conflict):
    """Stored ciphertext that does not authenticate under its key: tampered with, copied
    from another tenant or another field, or wrapped by a different key of the same id."""
