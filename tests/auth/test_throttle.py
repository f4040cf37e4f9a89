"""Sign-in throttling: an attacker's address waits, with backoff, and the account holder
signing in from anywhere else notices nothing. The ceilings per account and per address are
exercised on an app of their own with small limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.auth.throttle import backoff_s
from apiary.bootstrap import ensure_super_admin
from apiary.config import Settings
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import PASSWORD, login, make_tenant

pytestmark = pytest.mark.both_databases

HOLDER = "10.9.8.7"  # the `client` fixture's address: the account holder's
ATTACKER = "203.0.113.66"


def _from(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://apiary.test")


async def _guess(http: httpx.AsyncClient, email: str, password: str = "wrong-guess") -> int:  # noqa: S107
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    return response.status_code


async def test_an_attacker_cannot_lock_the_account_holder_out(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    created = await ensure_super_admin(runtime)
    assert created is not None
    root_email, root_password = created
    limit = runtime.settings.login_max_failures
    async with _from(app, ATTACKER) as attacker:
        for email in ("admin@acme.example", root_email):
            for _ in range(limit):
                assert await _guess(attacker, email) == 401
            refused = await attacker.post(
                "/api/v1/auth/login", json={"email": email, "password": "wrong-again"}
            )
            assert refused.status_code == 429
            assert 0 < int(refused.headers["retry-after"]) <= 30
            assert "not locked" in refused.json()["detail"]
            # The attacker's address waits even with the right password ...
            assert await _guess(attacker, email, PASSWORD) == 429
    # ... while the holder, from their own address, signs in as always, super admin included.
    assert (await login(client, "admin@acme.example")).tenant_id is not None
    signed_in = await client.post(
        "/api/v1/auth/login", json={"email": root_email, "password": root_password}
    )
    assert signed_in.status_code == 200, signed_in.text


async def test_each_further_guess_waits_twice_as_long(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    limit, window = runtime.settings.login_max_failures, runtime.settings.login_failure_window_s
    assert [backoff_s(n, limit=limit, window_s=window) for n in range(limit - 1, limit + 7)] == [
        0,
        30,
        60,
        120,
        240,
        480,
        900,
        900,
    ]
    wait_key = f"login:wait:admin@acme.example:{ATTACKER}"
    async with _from(app, ATTACKER) as attacker:
        for _ in range(limit):
            assert await _guess(attacker, "admin@acme.example") == 401
        first = await attacker.post(
            "/api/v1/auth/login", json={"email": "admin@acme.example", "password": "x-wrong"}
        )
        assert 25 <= int(first.headers["retry-after"]) <= 30
        await runtime.counters.delete(wait_key)  # the 30 s have passed
        assert await _guess(attacker, "admin@acme.example") == 401  # one more guess ...
        second = await attacker.post(
            "/api/v1/auth/login", json={"email": "admin@acme.example", "password": "x-wrong"}
        )
        assert second.status_code == 429
        assert 55 <= int(second.headers["retry-after"]) <= 60  # ... then twice the wait
        for _ in range(3):  # a flood of refused guesses ...
            await _guess(attacker, "admin@acme.example")
    # ... is recorded once (the first refusal while the wait lasts), as a platform entry.
    async with runtime.session_factory() as session:
        throttled = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "auth.login_throttled")
            )
        ).all()
    assert [(e.tenant_id, e.ip, e.details["reason"]) for e in throttled] == [
        (None, ATTACKER, "pair")
    ]


@pytest.fixture
async def small_limits(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app whose ceilings are small enough to reach in a test."""
    own = create_app(
        settings.model_copy(
            update={
                "login_max_failures": 2,
                "login_account_max_failures": 6,
                "login_ip_max_failures": 4,
            }
        )
    )
    async with own.router.lifespan_context(own):
        yield own


async def test_many_addresses_at_one_account_leave_its_usual_addresses_in(
    small_limits: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    email = "admin@acme.example"
    async with _from(small_limits, HOLDER) as holder:
        assert await _guess(holder, email, PASSWORD) == 200  # the holder's usual address
        for n in range(3):  # a botnet: two guesses from each of three addresses
            async with _from(small_limits, f"198.51.100.{n}") as bot:
                assert [await _guess(bot, email), await _guess(bot, email)] == [401, 401]
        async with _from(small_limits, "198.51.100.99") as fresh_bot:
            refused = await fresh_bot.post(
                "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            )
        assert refused.status_code == 429
        assert "addresses it has used before" in refused.json()["detail"]
        assert await _guess(holder, email, PASSWORD) == 200


async def test_one_address_spraying_many_accounts_is_slowed(
    small_limits: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    async with _from(small_limits, ATTACKER) as sprayer:
        for n in range(4):
            assert await _guess(sprayer, f"user{n}@spray.example") == 401
        refused = await sprayer.post(
            "/api/v1/auth/login", json={"email": "admin@acme.example", "password": PASSWORD}
        )
        assert refused.status_code == 429
        assert "from your address" in refused.json()["detail"]
    async with _from(small_limits, HOLDER) as holder:
        assert await _guess(holder, "admin@acme.example", PASSWORD) == 200


async def test_an_ipv6_client_rotating_through_its_64_is_one_client(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    email = "admin@acme.example"
    limit = runtime.settings.login_max_failures
    # One subscriber owns 2001:db8:7:1::/64 whole and takes a fresh address for each guess.
    for n in range(limit):
        async with _from(app, f"2001:db8:7:1::{n + 1:x}") as rotated:
            assert await _guess(rotated, email) == 401
    async with _from(app, "2001:db8:7:1:ffff:1:2:3") as rotated:
        assert await _guess(rotated, email) == 429
    # The neighbouring /64 is someone else, and signs in as always.
    async with _from(app, "2001:db8:7:2::1") as neighbour:
        assert await _guess(neighbour, email, PASSWORD) == 200


async def test_an_ipv4_mapped_address_counts_as_its_ipv4_address(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    email = "admin@acme.example"
    limit = runtime.settings.login_max_failures
    async with _from(app, ATTACKER) as attacker:
        for _ in range(limit):
            assert await _guess(attacker, email) == 401
    async with _from(app, f"::ffff:{ATTACKER}") as mapped:
        assert await _guess(mapped, email) == 429
    # IPv4 stays per address: the next address along is not throttled.
    async with _from(app, "203.0.113.67") as next_door:
        assert await _guess(next_door, email, PASSWORD) == 200
