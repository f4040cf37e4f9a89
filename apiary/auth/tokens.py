"""Token formats: JWT access tokens, opaque refresh tokens and API keys.

Access tokens are HS256 JWTs, verified with the algorithm pinned (no `alg` confusion, no
`none`) and with issuer, audience, expiry and type required. Refresh tokens and API keys are
random strings stored only as SHA-256 digests: they carry 256 bits of entropy, so a slow
password hash would add latency without adding safety.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from apiary.db import utcnow
from apiary.errors import Unauthorized

ISSUER = "apiary"
AUDIENCE = "apiary-api"
ALGORITHM = "HS256"

API_KEY_PREFIX = "apy_"
REFRESH_PREFIX = "apr_"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    tenant_id: uuid.UUID | None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def issue_access_token(
    claims: AccessClaims, *, signing_key: str, ttl_s: int, now: datetime | None = None
) -> str:
    issued = now or utcnow()
    payload: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": "access",
        "sub": str(claims.user_id),
        "sid": str(claims.session_id),
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_s),
        "jti": secrets.token_hex(8),
    }
    if claims.tenant_id is not None:
        payload["tid"] = str(claims.tenant_id)
    return jwt.encode(payload, signing_key, algorithm=ALGORITHM)


def decode_access_token(token: str, *, signing_key: str) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            signing_key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("access token has the wrong audience") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid access token") from None
    if payload.get("typ") != "access":
        raise Unauthorized("invalid access token")
    try:
        tenant = payload.get("tid")
        return AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            session_id=uuid.UUID(payload["sid"]),
            tenant_id=uuid.UUID(tenant) if tenant else None,
        )
    except (ValueError, TypeError):
        raise Unauthorized("invalid access token") from None


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: str  # shown once, never stored
    prefix: str  # stored and shown, to recognise the key
    key_hash: str


def new_api_key() -> NewApiKey:
    prefix = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key=key, prefix=prefix, key_hash=digest(key))


def api_key_prefix(key: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like ours."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, rest = key[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not rest:
        return None
    return prefix
