"""Signing webhook bodies, the way a receiver checks them (README, "Alerts").

Each request carries `Apiary-Webhook-Timestamp` (Unix seconds) and
`Apiary-Webhook-Signature: v1=<hex>`, the HMAC-SHA256 of `"<timestamp>.<raw body>"` keyed
with the channel's secret (the whole `whsec_…` string, as UTF-8). For a day after a secret
is rotated the header holds two signatures, `v1=<new>,v1=<old>`; a receiver accepts the
request when any of them matches, and refuses timestamps older than a few minutes
(replays of a captured request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not one
TIMESTAMP_HEADER = "Apiary-Webhook-Timestamp"
SIGNATURE_HEADER = "Apiary-Webhook-Signature"
ID_HEADER = "Apiary-Webhook-Id"
TOLERANCE_S = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets_: Iterable[str], timestamp: int, body: bytes) -> str:
    return ",".join(f"v1={signature(secret, timestamp, body)}" for secret in secrets_)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `body` with these headers was signed with `secret` within `tolerance_s`."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    offered = [
        part.strip().removeprefix("v1=")
        for part in lowered.get(SIGNATURE_HEADER.lower(), "").split(",")
        if part.strip().startswith("v1=")
    ]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
