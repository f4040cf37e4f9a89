"""Token formats: JWT access tokens, opaque refresh tokens and API keys.

Access tokens are HS256 JWTs, verified with the algorithm pinned (no `alg` confusion, no
`none`) and with issuer, audience, expiry and type required. Each names its signing key in
its `kid` header (a fingerprint of the secret, never the secret): one key signs, and the
previous ones are still accepted, so a rotation signs nobody out (`SigningKeys`). Refresh
tokens and API keys are random strings stored only as SHA-256 digests: they carry 256 bits
of entropy, so a slow password hash would add latency without adding safety.
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
class SigningKeys:
    """The secret that signs new access tokens and those that still verify older ones (the
    keys a rotation replaced, kept until the last token they signed has expired)."""

    current: str
    previous: tuple[str, ...] = ()

    @staticmethod
    def kid(secret: str) -> str:
        """The key's id in a token's header: a fingerprint, which tells keys apart without
        telling anything of them."""
        return hashlib.sha256(b"apiary-jwt-kid\0" + secret.encode()).hexdigest()[:16]

    def verifying(self, kid: object) -> list[str]:
        """The keys that may have signed a token with this `kid` header (every key when a
        token has none: those issued before tokens carried one)."""
        keys = [self.current, *self.previous]
        if kid is None:
            return keys
        return [key for key in keys if self.kid(key) == kid]


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
    claims: AccessClaims, *, keys: SigningKeys, ttl_s: int, now: datetime | None = None
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
    return jwt.encode(
        payload, keys.current, algorithm=ALGORITHM, headers={"kid": keys.kid(keys.current)}
    )


def _verified(token: str, keys: SigningKeys) -> dict[str, object]:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid access token") from None
    candidates = keys.verifying(kid)
    if not candidates:
        raise Unauthorized("access token signed with a key no longer accepted") from None
    for index, key in enumerate(candidates):
        try:
            payload: dict[str, object] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
            )
            return payload
        except jwt.InvalidSignatureError:
            if index == len(candidates) - 1:
                raise
    raise AssertionError("unreachable: the last candidate returned or raised")


def decode_access_token(token: str, *, keys: SigningKeys) -> AccessClaims:
    try:
        payload = _verified(token, keys)
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
            user_id=uuid.UUID(str(payload["sub"])),
            session_id=uuid.UUID(str(payload["sid"])),
            tenant_id=uuid.UUID(str(tenant)) if tenant else None,
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
