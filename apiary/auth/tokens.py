"""Token formats: JWT access tokens, opaque refresh tokens and API keys.

Access tokens are JWTs signed with HS256 (a shared secret) or, when an EC P-256 private
key is configured, ES256, whose public keys other services fetch from
`/.well-known/jwks.json` to verify Apiary's tokens themselves. Each key verifies only with
its own algorithm (no `alg` confusion, no `none`), and issuer, audience, expiry and type
are required. Each token names its signing key in its `kid` header (a fingerprint, never
the key): one key signs, and the previous ones are still accepted, so a rotation (of a
secret, of an EC key, or from HS256 to ES256) signs nobody out (`SigningKeys`). Refresh
tokens and API keys are random strings stored only as SHA-256 digests: they carry 256 bits
of entropy, so a slow password hash would add latency without adding safety.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from jwt.algorithms import ECAlgorithm

from apiary.db import utcnow
from apiary.errors import Unauthorized

ISSUER = "apiary"
AUDIENCE = "apiary-api"

API_KEY_PREFIX = "apy_"
REFRESH_PREFIX = "apr_"


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    kid: str
    algorithm: str  # the one algorithm this key verifies
    key: Any  # an HMAC secret (str) or an EC public key


def ec_private_key(pem: str) -> EllipticCurvePrivateKey:
    """An EC P-256 private key from PEM, or ValueError saying what it is instead."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("must be an EC P-256 (prime256v1) private key, for ES256")
    return key


def ec_public_key(pem: str) -> EllipticCurvePublicKey:
    """The EC P-256 public key of a PEM private or public key."""
    if "PRIVATE KEY" in pem:
        return ec_private_key(pem).public_key()
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key ({error})") from None
    if not isinstance(key, EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("must be an EC P-256 (prime256v1) key, for ES256")
    return key


def _public_jwk(key: EllipticCurvePublicKey) -> dict[str, str]:
    jwk: dict[str, str] = ECAlgorithm.to_jwk(key, as_dict=True)
    return {name: jwk[name] for name in ("kty", "crv", "x", "y")}


def _thumbprint(key: EllipticCurvePublicKey) -> str:
    """RFC 7638's JWK thumbprint: the key id other services can recompute from the JWKS."""
    canonical = json.dumps(_public_jwk(key), separators=(",", ":"), sort_keys=True)
    digest_ = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest_).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs new access tokens and those that still verify older ones (the
    keys a rotation replaced, kept until the last token they signed has expired).

    `current` and `previous` are HS256 secrets; with `ec_current` (a PEM EC P-256 private
    key) ES256 signs instead and the secrets only verify, which is how a deployment moves
    from HS256 to ES256 without signing anyone out. `ec_previous` holds replaced EC keys
    (PEM, private or public)."""

    current: str
    previous: tuple[str, ...] = ()
    ec_current: str | None = None
    ec_previous: tuple[str, ...] = ()

    @staticmethod
    def kid(secret: str) -> str:
        """A secret's id in a token's header: a fingerprint, which tells keys apart without
        telling anything of them."""
        return hashlib.sha256(b"apiary-jwt-kid\0" + secret.encode()).hexdigest()[:16]

    @cached_property
    def _ec_signer(self) -> EllipticCurvePrivateKey | None:
        return ec_private_key(self.ec_current) if self.ec_current else None

    @cached_property
    def _ec_public(self) -> list[EllipticCurvePublicKey]:
        pems = [self.ec_current] if self.ec_current else []
        return [ec_public_key(pem) for pem in (*pems, *self.ec_previous)]

    @cached_property
    def _all(self) -> list[VerifyingKey]:
        ec = [VerifyingKey(_thumbprint(key), "ES256", key) for key in self._ec_public]
        hs = [VerifyingKey(self.kid(s), "HS256", s) for s in (self.current, *self.previous)]
        return ec + hs

    def signer(self) -> tuple[str, Any, str]:
        """(algorithm, key, kid) new tokens are signed with."""
        if self._ec_signer is not None:
            return "ES256", self._ec_signer, _thumbprint(self._ec_signer.public_key())
        return "HS256", self.current, self.kid(self.current)

    def verifying(self, kid: object) -> list[VerifyingKey]:
        """The keys that may have signed a token with this `kid` header (every secret when a
        token has none: HS256 tokens issued before tokens carried one)."""
        if kid is None:
            return [key for key in self._all if key.algorithm == "HS256"]
        return [key for key in self._all if key.kid == kid]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys as a JWK Set, for other services to verify Apiary's tokens: the
        EC keys only (an HS256 secret is never published)."""
        return {
            "keys": [
                {**_public_jwk(key), "kid": _thumbprint(key), "use": "sig", "alg": "ES256"}
                for key in self._ec_public
            ]
        }


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
    algorithm, key, kid = keys.signer()
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def _verified(token: str, keys: SigningKeys) -> dict[str, object]:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid access token") from None
    candidates = keys.verifying(kid)
    if not candidates:
        raise Unauthorized("access token signed with a key no longer accepted") from None
    for index, candidate in enumerate(candidates):
        try:
            payload: dict[str, object] = jwt.decode(
                token,
                candidate.key,
                algorithms=[candidate.algorithm],  # pinned per key: no alg confusion
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
