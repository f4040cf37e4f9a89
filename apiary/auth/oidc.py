"""The external OpenID Connect issuer (Azure AD style): ID token verification, and the
authorization code exchange of the dashboard's sign-in.

`OIDCVerifier` turns a raw ID token into an `OIDCIdentity` or raises `Unauthorized` with a
short reason. It reads the token header first and refuses any algorithm outside the
configured asymmetric allow-list before looking up a key; keys come only from the issuer's
JWKS (discovered from its metadata unless configured), never from the token itself. The key
set is cached in memory and refetched when a token names an unknown `kid` (key rotation), at
most once per minute so that forged tokens cannot make Apiary hammer the issuer.

`redeem_code` is the server's half of the authorization code flow with PKCE: the browser
brings back the code and its `code_verifier`, and Apiary (the OAuth client, confidential when
`client_secret` is set) redeems them at the issuer's token endpoint, so no token of the
issuer ever reaches the browser. The ID token it gets is verified like any other, and must
carry the nonce the browser put in the authorization request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from apiary.config import OIDCSettings
from apiary.errors import ServiceUnavailable, Unauthorized
from apiary.kit.schemas import NAME_JOINERS, visible_text

log = logging.getLogger("apiary.auth.oidc")

LEEWAY_S = 60
REFETCH_INTERVAL_S = 60.0
RETRY_FIRST_FETCH_S = 5.0
# Even without an unknown kid the set is refreshed now and then, so a key the issuer
# withdrew (compromised, rotated out) stops being trusted without a restart.
JWKS_MAX_AGE_S = 3600.0
# Real ID tokens are a few KB; refusing huge input keeps parsing cheap for garbage.
MAX_TOKEN_CHARS = 16_384
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
# Error text from the issuer's token endpoint is shown to the user; bounded, printable.
MAX_IDP_ERROR_CHARS = 300


@dataclass(frozen=True)
class OIDCIdentity:
    subject: str
    email: str
    name: str
    tenant_ref: str | None  # the issuer's tenant id (settings.tenant_claim, e.g. `tid`)
    # The values of settings.role_claims (group object ids, app role values), for role maps.
    role_claim_values: frozenset[str] = frozenset()
    # Azure AD leaves `groups` out when a user is in too many (over 200 in an ID token) and
    # says so instead (`_claim_names.groups`, `hasgroups`): a group map cannot be applied.
    groups_overage: bool = False


def _reject(reason: str) -> Unauthorized:
    return Unauthorized(f"invalid ID token: {reason}")


class _IssuerUnreachable(Exception):
    """Fetching metadata or keys failed; the message says why, for the log only."""


def _printable(value: str) -> str:
    """`value` without the characters `visible_text` refuses in a user's name."""
    return "".join(char for char in value if _keeps(char))


def _keeps(char: str) -> bool:
    try:
        visible_text(char, keep=NAME_JOINERS)
    except ValueError:
        return False
    return True


class OIDCVerifier:
    """Verifies ID tokens of one issuer; keep one instance per process to share its caches."""

    def __init__(
        self,
        settings: OIDCSettings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._allowed = frozenset(
            alg
            for alg in settings.allowed_algorithms
            if alg.lower() != "none" and not alg.upper().startswith("HS")
        )
        self._jwks_url: str | None = settings.jwks_url
        self._token_url: str | None = settings.token_endpoint
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, dict[str, Any]] | None = None  # kid -> JWK, as published
        self._keys: dict[tuple[str, str], jwt.PyJWK] = {}  # (kid, alg) -> built key
        self._loaded_at: float | None = None  # last successful fetch of the key set
        self._attempted_at: float | None = None  # last fetch attempt, for the throttle
        self._lock = asyncio.Lock()

    async def verify(self, id_token: str, *, nonce: str | None = None) -> OIDCIdentity:
        """The identity in a valid ID token; with `nonce`, the token must carry exactly it
        (it answers the authorization request that sent that nonce, not a replayed one)."""
        if not id_token or len(id_token) > MAX_TOKEN_CHARS:
            raise _reject("malformed token")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise _reject("malformed token") from None

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _reject("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _reject("malformed token")

        key = await self._signing_key(kid, alg)
        claims = self._decode(id_token, key, alg)
        if nonce is not None:
            claimed = claims.get("nonce")
            if not isinstance(claimed, str) or not hmac.compare_digest(claimed, nonce):
                raise _reject("nonce does not match this sign-in")
        return self._identity(claims)

    def claimed_account(self, id_token: str) -> str:
        """The account an ID token claims, before anything about it is verified: the sign-in
        throttle's account key, as a password sign-in's is the email it names. Accounts are
        bound to (tenant claim, subject), so that is the key; a token without them shares
        one key for garbage (`oidc:-`). Unverified on purpose: a forged token claiming
        someone's subject is a wrong guess at that account, counted against its address."""
        if not id_token or len(id_token) > MAX_TOKEN_CHARS:
            return "oidc:-"
        try:
            claims = jwt.decode(id_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "oidc:-"
        subject = claims.get("sub")
        tenant_ref = claims.get(self._settings.tenant_claim)
        if not isinstance(subject, str) or not subject:
            return "oidc:-"
        return f"oidc:{tenant_ref if isinstance(tenant_ref, str) else '-'}:{subject}"

    def _decode(self, id_token: str, key: jwt.PyJWK, alg: str) -> Mapping[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[alg],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            raise _reject("signature verification failed") from None
        except jwt.ExpiredSignatureError:
            raise _reject("token expired") from None
        except jwt.ImmatureSignatureError:
            raise _reject("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise _reject("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _reject("wrong issuer") from None
        except jwt.MissingRequiredClaimError as error:
            raise _reject(f"missing {error.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise _reject("algorithm not allowed") from None
        except jwt.InvalidKeyError:
            raise _reject("unusable signing key") from None
        except jwt.PyJWTError:
            raise _reject("malformed token") from None
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> OIDCIdentity:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _reject("missing sub claim")
        # Azure AD puts the address in `email` only when the user has a mailbox; work
        # accounts otherwise carry it as `preferred_username` (v2) or `upn` (v1).
        email = next(
            (
                value.strip().lower()
                for claim in ("email", "preferred_username", "upn")
                if isinstance(value := claims.get(claim), str) and "@" in value
            ),
            None,
        )
        if email is None:
            raise _reject("missing email claim")
        try:
            visible_text(email)
        except ValueError:
            raise _reject("email claim holds control or invisible characters") from None
        name = claims.get("name")
        # The IdP's display name is kept, less what no name needs (see visible_text).
        name = _printable(name)[:200].strip() if isinstance(name, str) else ""
        tenant_ref = claims.get(self._settings.tenant_claim)
        values: set[str] = set()
        for claim in self._settings.role_claims:
            value = claims.get(claim)
            if isinstance(value, str):
                values.add(value)
            elif isinstance(value, list):
                values.update(item for item in value if isinstance(item, str))
        claim_names = claims.get("_claim_names")
        overage = claims.get("hasgroups") is True or (
            isinstance(claim_names, dict) and "groups" in claim_names
        )
        return OIDCIdentity(
            subject=subject,
            email=email,
            name=name or email,
            tenant_ref=tenant_ref if isinstance(tenant_ref, str) and tenant_ref else None,
            role_claim_values=frozenset(values),
            groups_overage=overage,
        )

    async def _signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if self._needs_fetch(kid):
            async with self._lock:
                # Another request may have refreshed the set while this one waited.
                if self._needs_fetch(kid):
                    await self._refresh(kid)
        if self._jwks is None:
            raise _reject("issuer unreachable")
        jwk = self._find(self._jwks, kid)
        if jwk is None:
            raise _reject("unknown signing key")
        jwk_kid, jwk_data = jwk
        cached = self._keys.get((jwk_kid, alg))
        if cached is not None:
            return cached
        # A key published for one algorithm must not verify another (e.g. an RSA key
        # offered for ES256, or an `alg: PS256` key used with RS256).
        published_alg = jwk_data.get("alg")
        if published_alg is not None and published_alg != alg:
            raise _reject("algorithm does not match signing key")
        try:
            key = jwt.PyJWK(jwk_data, algorithm=alg)
        except jwt.PyJWTError:
            raise _reject("algorithm does not match signing key") from None
        self._keys[(jwk_kid, alg)] = key
        return key

    @staticmethod
    def _find(
        jwks: Mapping[str, dict[str, Any]], kid: str | None
    ) -> tuple[str, dict[str, Any]] | None:
        if kid is None:
            # `kid` is optional in JWS; without it only a single-key set is unambiguous.
            return next(iter(jwks.items())) if len(jwks) == 1 else None
        jwk = jwks.get(kid)
        return (kid, jwk) if jwk is not None else None

    def _needs_fetch(self, kid: str | None) -> bool:
        now = self._clock()
        if self._jwks is None or self._loaded_at is None:
            # Requests queued behind a failed first fetch fail fast instead of each
            # waiting out another timeout.
            return self._attempted_at is None or now - self._attempted_at >= RETRY_FIRST_FETCH_S
        if self._attempted_at is not None and now - self._attempted_at < REFETCH_INTERVAL_S:
            return False
        return self._find(self._jwks, kid) is None or now - self._loaded_at >= JWKS_MAX_AGE_S

    async def _refresh(self, kid: str | None) -> None:
        self._attempted_at = self._clock()
        try:
            jwks = await self._fetch_jwks()
        except _IssuerUnreachable as error:
            log.warning("OIDC issuer %s: %s", self._settings.issuer, error)
            if self._jwks is None or self._find(self._jwks, kid) is None:
                raise _reject("issuer unreachable") from None
            return  # the stale set still knows this kid; better than locking everyone out
        self._jwks = jwks
        self._keys = {}
        self._loaded_at = self._attempted_at

    async def _fetch_jwks(self) -> dict[str, dict[str, Any]]:
        if self._jwks_url is None:
            metadata = await self._issuer_metadata()
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise _IssuerUnreachable("metadata has no jwks_uri")
            self._jwks_url = jwks_uri
        document = await self._get_json(self._jwks_url)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise _IssuerUnreachable("JWKS has no key list")
        jwks = {
            # A lone key may omit its kid; tokens without a kid then still find it.
            jwk["kid"] if isinstance(jwk.get("kid"), str) else "": jwk
            for jwk in keys
            # Encryption keys can share the set; they never sign tokens.
            if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig"
        }
        if not jwks:
            raise _IssuerUnreachable("JWKS has no signing keys")
        return jwks

    async def _issuer_metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            base = self._settings.issuer.rstrip("/")
            self._metadata = await self._get_json(f"{base}/.well-known/openid-configuration")
        return self._metadata

    async def redeem_code(self, code: str, *, code_verifier: str, redirect_uri: str) -> str:
        """The ID token the issuer's token endpoint gives for an authorization code and its
        PKCE verifier; `Unauthorized` naming the issuer's refusal (a used, expired or forged
        code, a wrong verifier), `ServiceUnavailable` when the issuer cannot be reached."""
        try:
            token_url = self._token_url
            if token_url is None:
                found = (await self._issuer_metadata()).get("token_endpoint")
                if not isinstance(found, str) or not found:
                    raise _IssuerUnreachable("metadata has no token_endpoint")
                token_url = self._token_url = found
        except _IssuerUnreachable as error:
            log.warning("OIDC issuer %s: %s", self._settings.issuer, error)
            raise ServiceUnavailable("the identity provider cannot be reached") from None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self._settings.audience,
        }
        headers = {"Accept": "application/json"}
        secret = self._settings.client_secret
        if secret is not None:
            # client_secret_basic, which every OAuth server supports (RFC 6749 2.3.1: each
            # part form-encoded first).
            pair = f"{quote(self._settings.audience, safe='')}:"
            pair += quote(secret.get_secret_value(), safe="")
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            response = await self._http.post(token_url, data=form, headers=headers)
            document = response.json()
        except httpx.HTTPError as error:
            log.warning("OIDC token endpoint %s: %s", token_url, type(error).__name__)
            raise ServiceUnavailable("the identity provider cannot be reached") from None
        except ValueError:
            document = None
        if not isinstance(document, dict):
            log.warning("OIDC token endpoint %s: %s, not JSON", token_url, response.status_code)
            raise ServiceUnavailable("the identity provider answered something unreadable")
        if response.status_code != 200:
            error_code = _printable(str(document.get("error", response.status_code)))
            description = document.get("error_description")
            said = f"{error_code}: {_printable(description)}" if description else error_code
            raise Unauthorized(
                f"the identity provider refused the sign-in code ({said[:MAX_IDP_ERROR_CHARS]})"
            )
        id_token = document.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise Unauthorized("the identity provider returned no ID token (is `openid` a scope?)")
        return id_token

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except httpx.HTTPError as error:
            raise _IssuerUnreachable(f"GET {url}: {type(error).__name__}") from None
        except ValueError:
            raise _IssuerUnreachable(f"GET {url}: response is not JSON") from None
        if not isinstance(document, dict):
            raise _IssuerUnreachable(f"GET {url}: response is not a JSON object")
        return document
