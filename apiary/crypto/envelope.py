"""The ciphertext format: a versioned header, then AES-256-GCM.

    magic (4 bytes, b"\\xa7AE\\x01": format 1) | data key version (4, big-endian)
    | nonce (12) | ciphertext and its 16-byte tag

The associated data binds a ciphertext to its tenant and to what it is (a document's
content, a turn's answer): copied to another row, another field or another tenant it does
not decrypt. Text columns keep the same bytes as `TEXT_PREFIX` + URL-safe base64. Data
written before encryption was turned on has no header and reads as it is.
"""

from __future__ import annotations

import base64
import os
import struct
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\xa7AE\x01"
TEXT_PREFIX = "apiary-enc:1:"
_HEADER = struct.Struct(">4sI12s")
NONCE_BYTES = 12
KEY_BYTES = 32  # AES-256


class TagMismatch(Exception):
    """The ciphertext does not authenticate under the key it names."""


@dataclass(frozen=True, slots=True)
class Header:
    key_version: int
    nonce: bytes


def is_sealed(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC and len(blob) >= _HEADER.size + 16


def is_sealed_text(value: str) -> bool:
    return value.startswith(TEXT_PREFIX)


def header(blob: bytes) -> Header:
    _, version, nonce = _HEADER.unpack_from(blob)
    return Header(key_version=version, nonce=nonce)


def associated_data(tenant_id: uuid.UUID, purpose: str) -> bytes:
    return tenant_id.bytes + purpose.encode()


def seal(key: AESGCM, key_version: int, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond 2^32 per key
    head = _HEADER.pack(MAGIC, key_version, nonce)
    # The header is authenticated too: a version byte changed in place does not decrypt.
    return head + key.encrypt(nonce, plaintext, head + aad)


def open_sealed(key: AESGCM, blob: bytes, aad: bytes) -> bytes:
    head = blob[: _HEADER.size]
    nonce = head[-NONCE_BYTES:]
    try:
        return key.decrypt(nonce, blob[_HEADER.size :], head + aad)
    except InvalidTag:
        raise TagMismatch from None


def to_text(blob: bytes) -> str:
    return TEXT_PREFIX + base64.urlsafe_b64encode(blob).decode()


def from_text(value: str) -> bytes:
    return base64.urlsafe_b64decode(value[len(TEXT_PREFIX) :])
