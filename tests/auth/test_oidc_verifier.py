"""OIDCVerifier against a real local issuer: what passes, and every way a token is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from apiary.auth.oidc import REFETCH_INTERVAL_S, OIDCIdentity, OIDCVerifier
from apiary.config import OIDCSettings
from apiary.errors import Unauthorized
from tests.auth.oidc_issuer import LocalIssuer, new_rsa_key

# Re-exported so pytest finds the fixture until a conftest imports it.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        yield client


@pytest.fixture
def verifier(local_issuer: LocalIssuer, http: httpx.AsyncClient) -> OIDCVerifier:
    return OIDCVerifier(local_issuer.settings(), http)


async def rejected(verifier: OIDCVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    detail = caught.value.detail
    assert token not in detail
    return detail


async def test_valid_token_gives_identity(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(sub="user-42", email="Ada@Example.COM", tid="contoso")

    identity = await verifier.verify(token)

    assert identity == OIDCIdentity(
        subject="user-42", email="ada@example.com", name="Ada Example", tenant_ref="contoso"
    )


async def test_email_falls_back_to_preferred_username(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(email=None, extra={"preferred_username": "Bob@Contoso.com"})

    identity = await verifier.verify(token)

    assert identity.email == "bob@contoso.com"


async def test_username_that_is_not_an_address_is_skipped_for_upn(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(
        email=None, extra={"preferred_username": "ada", "upn": "Ada@Contoso.com"}
    )

    identity = await verifier.verify(token)

    assert identity.email == "ada@contoso.com"


async def test_tenant_claim_is_configurable(
    local_issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    verifier = OIDCVerifier(local_issuer.settings(tenant_claim="org"), http)

    identity = await verifier.verify(local_issuer.token(tid=None, extra={"org": "org-7"}))

    assert identity.tenant_ref == "org-7"


async def test_configured_jwks_url_skips_discovery(
    local_issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    verifier = OIDCVerifier(local_issuer.settings(jwks_url=local_issuer.jwks_uri), http)
    metadata_requests = local_issuer.metadata_requests

    await verifier.verify(local_issuer.token())

    assert local_issuer.metadata_requests == metadata_requests


async def test_keys_are_cached_between_tokens(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    await verifier.verify(local_issuer.token())
    jwks_requests = local_issuer.jwks_requests

    await verifier.verify(local_issuer.token(sub="user-2"))

    assert local_issuer.jwks_requests == jwks_requests


async def test_foreign_key_with_same_kid_is_rejected(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(key=new_rsa_key())

    assert await rejected(verifier, token) == "invalid ID token: signature verification failed"


async def test_wrong_audience_is_rejected(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(aud="another-app")

    assert await rejected(verifier, token) == "invalid ID token: wrong audience"


async def test_audience_list_containing_ours_is_accepted(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(aud=["another-app", "apiary-test"])

    assert (await verifier.verify(token)).subject == "user-1"


async def test_expired_token_is_rejected(verifier: OIDCVerifier, local_issuer: LocalIssuer) -> None:
    token = local_issuer.token(exp_in=-120)

    assert await rejected(verifier, token) == "invalid ID token: token expired"


async def test_expiry_within_leeway_is_accepted(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(exp_in=-30)

    assert (await verifier.verify(token)).subject == "user-1"


async def test_not_before_in_the_future_is_rejected(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.token(extra={"nbf": local_issuer.claims()["iat"] + 600})

    assert await rejected(verifier, token) == "invalid ID token: token not yet valid"


async def test_missing_iat_is_rejected(verifier: OIDCVerifier, local_issuer: LocalIssuer) -> None:
    claims = local_issuer.claims()
    token = local_issuer.token(extra={"iat": None}, exp_in=claims["exp"] - claims["iat"])

    assert await rejected(verifier, token) == "invalid ID token: missing iat claim"


async def test_missing_sub_is_rejected(verifier: OIDCVerifier, local_issuer: LocalIssuer) -> None:
    token = local_issuer.token(sub=None)

    assert await rejected(verifier, token) == "invalid ID token: missing sub claim"


async def test_alg_none_is_rejected_before_any_key_lookup(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    jwks_requests = local_issuer.jwks_requests
    token = local_issuer.unsigned_token()

    assert await rejected(verifier, token) == "invalid ID token: algorithm not allowed"
    assert local_issuer.jwks_requests == jwks_requests


async def test_hs256_with_public_key_as_secret_is_rejected(
    verifier: OIDCVerifier, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.hmac_token(local_issuer.public_key_pem)

    assert await rejected(verifier, token) == "invalid ID token: algorithm not allowed"


async def test_hs256_is_rejected_even_if_settings_allow_it(
    local_issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    # model_construct skips the settings validator, as a hand-built object might.
    settings = OIDCSettings.model_construct(
        **{**local_issuer.settings().model_dump(), "allowed_algorithms": ["RS256", "HS256"]}
    )
    verifier = OIDCVerifier(settings, http)
    token = local_issuer.hmac_token(local_issuer.public_key_pem)

    assert await rejected(verifier, token) == "invalid ID token: algorithm not allowed"


async def test_algorithm_outside_allow_list_is_rejected(
    local_issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    verifier = OIDCVerifier(local_issuer.settings(allowed_algorithms=["ES256"]), http)

    assert (
        await rejected(verifier, local_issuer.token()) == "invalid ID token: algorithm not allowed"
    )


async def test_wrong_issuer_is_rejected(verifier: OIDCVerifier, local_issuer: LocalIssuer) -> None:
    token = local_issuer.token(issuer=local_issuer.issuer + "/other")

    assert await rejected(verifier, token) == "invalid ID token: wrong issuer"


async def test_missing_email_is_rejected(verifier: OIDCVerifier, local_issuer: LocalIssuer) -> None:
    token = local_issuer.token(email=None)

    assert await rejected(verifier, token) == "invalid ID token: missing email claim"


async def test_garbage_is_rejected(verifier: OIDCVerifier) -> None:
    assert await rejected(verifier, "not.a.jwt") == "invalid ID token: malformed token"


async def test_rotated_key_is_fetched_for_a_new_kid(http: httpx.AsyncClient) -> None:
    clock = FakeClock()
    with LocalIssuer() as issuer:
        verifier = OIDCVerifier(issuer.settings(), http, clock=clock)
        await verifier.verify(issuer.token())
        old_token = issuer.token()

        issuer.rotate_key()
        clock.now += REFETCH_INTERVAL_S + 1
        identity = await verifier.verify(issuer.token(sub="after-rotation"))

        assert identity.subject == "after-rotation"
        assert issuer.jwks_requests == 2
        # The old key is withdrawn and the cache was replaced, so its tokens stop working.
        assert await rejected(verifier, old_token) == "invalid ID token: unknown signing key"


async def test_unknown_kid_refetch_is_throttled(
    local_issuer: LocalIssuer, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    verifier = OIDCVerifier(local_issuer.settings(), http, clock=clock)
    await verifier.verify(local_issuer.token())
    jwks_requests = local_issuer.jwks_requests

    for _ in range(3):
        token = local_issuer.token(kid="no-such-key")
        assert await rejected(verifier, token) == "invalid ID token: unknown signing key"
    assert local_issuer.jwks_requests == jwks_requests

    clock.now += REFETCH_INTERVAL_S + 1
    assert await rejected(verifier, token) == "invalid ID token: unknown signing key"
    assert local_issuer.jwks_requests == jwks_requests + 1


async def test_issuer_down_is_reported_as_unreachable(http: httpx.AsyncClient) -> None:
    with LocalIssuer() as issuer:
        token = issuer.token()
        verifier = OIDCVerifier(issuer.settings(), http)
    # Leaving the block stopped the server: its port now refuses connections.

    assert await rejected(verifier, token) == "invalid ID token: issuer unreachable"
