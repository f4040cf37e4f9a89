"""Access-token signing keys: a `kid` in each token, one key signing and the previous ones
accepted, so rotating the key signs nobody out (apiary/auth/tokens.py: SigningKeys)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apiary.auth.tokens import SigningKeys
from apiary.config import ConfigError, Settings, load_settings
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import login, make_tenant


def _with_keys(settings: Settings, secret: str, previous: list[str]) -> Settings:
    values = settings.model_dump()
    values.update(jwt_secret=secret, jwt_previous_secrets=previous)
    return Settings(**values)


@asynccontextmanager
async def _replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another `apiary serve` on the same database, with these settings."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
            yield http


async def _me(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


async def test_a_token_names_its_key_without_revealing_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    header = jwt.get_unverified_header(tenant.admin.token)
    secret = runtime.settings.signing_key
    assert header["kid"] == SigningKeys.kid(secret)
    assert secret not in tenant.admin.token
    assert secret[:8] not in header["kid"]


async def test_rotating_the_key_signs_nobody_out_until_the_old_key_is_dropped(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    old = runtime.settings.signing_key
    new = secrets.token_urlsafe(32)
    async with _replica(_with_keys(settings, new, [old])) as rotated:
        # A token signed before the rotation still works after it...
        assert (await _me(rotated, tenant.admin.token)).status_code == 200
        # ... and new ones are signed with the new key.
        assert tenant.admin.email is not None
        fresh = await login(rotated, tenant.admin.email, tenant="acme")
        assert jwt.get_unverified_header(fresh.token)["kid"] == SigningKeys.kid(new)
        assert (await _me(rotated, fresh.token)).status_code == 200
    # A replica still on the old key alone does not know the new one.
    refused = await _me(client, fresh.token)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "access token signed with a key no longer accepted"
    # Once the old key is dropped, what it signed is refused; the refresh token (opaque,
    # in the database) still gets a new access token, so the user is not signed out.
    async with _replica(_with_keys(settings, new, [])) as dropped:
        assert (await _me(dropped, tenant.admin.token)).status_code == 401
        refreshed = await dropped.post(
            "/api/v1/auth/refresh", json={"refresh_token": tenant.admin.refresh_token}
        )
        assert refreshed.status_code == 200, refreshed.text
        assert (await _me(dropped, refreshed.json()["access_token"])).status_code == 200


async def test_a_token_from_before_key_ids_verifies_with_the_current_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    claims = jwt.decode(tenant.admin.token, options={"verify_signature": False})
    without_kid = jwt.encode(claims, runtime.settings.signing_key, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(without_kid)
    assert (await _me(client, without_kid)).status_code == 200


async def test_a_kid_naming_an_accepted_key_does_not_help_a_token_signed_with_another(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    claims = jwt.decode(tenant.admin.token, options={"verify_signature": False})
    kid = SigningKeys.kid(runtime.settings.signing_key)
    forged = jwt.encode(claims, "x" * 40, algorithm="HS256", headers={"kid": kid})
    response = await _me(client, forged)
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid access token"


def test_previous_secrets_are_read_comma_separated_and_must_be_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = "a" * 40, "b" * 40
    monkeypatch.setenv("APIARY_JWT_PREVIOUS_SECRETS", f"{first}, {second}")
    keys = load_settings().signing_keys
    assert keys.previous == (first, second)
    monkeypatch.setenv("APIARY_JWT_PREVIOUS_SECRETS", "too-short")
    with pytest.raises(ConfigError, match="APIARY_JWT_PREVIOUS_SECRETS"):
        load_settings()


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _with_ec(settings: Settings, private: str, previous: list[str]) -> Settings:
    values = settings.model_dump()
    values.update(
        jwt_secret=settings.signing_key,
        jwt_private_key=private,
        jwt_previous_public_keys=previous,
    )
    return Settings(**values)


async def _verified_by_jwks(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """What another service does: fetch the JWK Set, pick the key the token names, verify."""
    fetched = await http.get("/.well-known/jwks.json")
    assert fetched.status_code == 200, fetched.text
    key = jwt.PyJWKSet.from_dict(fetched.json())[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience="apiary-api", issuer="apiary"
    )
    return claims


async def test_es256_tokens_verify_with_the_published_keys_and_hs256_ones_still_work(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    assert (await client.get("/.well-known/jwks.json")).json() == {"keys": []}  # HS256 only
    assert tenant.admin.email is not None
    first, second = _ec_pem(), _ec_pem()
    async with _replica(_with_ec(settings, first, [])) as es:
        # Moving from HS256 to ES256 signs nobody out...
        assert (await _me(es, tenant.admin.token)).status_code == 200
        # ... and new tokens are ES256, verifiable by anyone with the published key.
        signed = await login(es, tenant.admin.email, tenant="acme")
        assert jwt.get_unverified_header(signed.token)["alg"] == "ES256"
        assert (await _verified_by_jwks(es, signed.token))["sub"] == tenant.admin.user_id
        assert "PRIVATE" not in (await es.get("/.well-known/jwks.json")).text
    # Rotating the EC key: the old one published and accepted until it is dropped.
    async with _replica(_with_ec(settings, second, [first])) as rotated:
        published = (await rotated.get("/.well-known/jwks.json")).json()["keys"]
        assert len(published) == 2
        assert (await _me(rotated, signed.token)).status_code == 200
        assert (await _verified_by_jwks(rotated, signed.token))["sub"] == tenant.admin.user_id
        newer = await login(rotated, tenant.admin.email, tenant="acme")
        assert (
            jwt.get_unverified_header(newer.token)["kid"]
            != jwt.get_unverified_header(signed.token)["kid"]
        )
    async with _replica(_with_ec(settings, second, [])) as dropped:
        refused = await _me(dropped, signed.token)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "access token signed with a key no longer accepted"
        assert (await _me(dropped, newer.token)).status_code == 200


async def test_an_hs256_token_keyed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    # The classic confusion: HMAC "signed" with the published public key, naming its kid.
    tenant = await make_tenant(runtime, client, "acme")
    private = _ec_pem()
    async with _replica(_with_ec(settings, private, [])) as es:
        kid = (await es.get("/.well-known/jwks.json")).json()["keys"][0]["kid"]
        claims = jwt.decode(tenant.admin.token, options={"verify_signature": False})
        public_pem = (
            serialization.load_pem_private_key(private.encode(), password=None)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        def b64(raw: bytes) -> bytes:
            return base64.urlsafe_b64encode(raw).rstrip(b"=")

        header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
        body = b64(orjson.dumps(claims))
        signature = b64(hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest())
        forged = b".".join([header, body, signature]).decode()
        response = await _me(es, forged)
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid access token"


def test_a_private_key_that_is_not_ec_p256_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    for wrong, why in ((rsa_pem, "EC P-256"), ("not a key", "PEM private key")):
        monkeypatch.setenv("APIARY_JWT_PRIVATE_KEY", wrong)
        with pytest.raises(ConfigError, match=f"APIARY_JWT_PRIVATE_KEY.*{why}"):
            load_settings()
    monkeypatch.setenv("APIARY_JWT_PRIVATE_KEY", _ec_pem())
    monkeypatch.setenv("APIARY_JWT_PREVIOUS_PUBLIC_KEYS", "garbage")
    with pytest.raises(ConfigError, match="APIARY_JWT_PREVIOUS_PUBLIC_KEYS"):
        load_settings()
