"""Error reports to Sentry: the real sentry_sdk pointed at a local stand-in that receives its
envelopes over HTTP, as sentry.io would. An unhandled error in a route (in this process,
set up as `apiary serve` sets it up) and in a task on a real `apiary worker` each arrive as
an event, and no secret value appears anywhere in what was sent."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import sentry_sdk
from aiohttp import web
from fastapi import FastAPI
from pydantic import SecretStr

from apiary.config import Settings
from apiary.main import create_app
from apiary.observability import error_reports
from apiary.worker.celery_app import TASK_NAME, _producer
from tests.conftest import TEST_REDIS
from tests.fakes import DEFAULT_API_KEY, FakeUpstream
from tests.gateway.conftest import providers
from tests.swarm.test_celery_worker import Workers, workers  # noqa: F401 - the fixture

JWT_SECRET = "jwt-secret-for-the-sentry-test-0123456789abcdef"
METRICS_TOKEN = "metrics-token-for-the-sentry-test-42"
PROVIDER_KEY = "sk-provider-key-for-the-sentry-test-77"
CLIENT_KEY = "apy_client-key-sent-by-the-caller-1234"
COOKIE = "session-cookie-value-5678"


class SentryStandIn:
    """Receives what sentry_sdk sends to a DSN `http://public@127.0.0.1:PORT/1`."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/1/envelope/", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes a Content-Encoding it knows
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        self.envelopes.append(body)
        return web.json_response({})

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in _events(envelope)]

    async def wait_event(self, timeout_s: float = 30.0) -> dict[str, Any]:
        for _ in range(int(timeout_s / 0.1)):
            if found := self.events():
                return found[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no event arrived ({len(self.envelopes)} envelopes)")


def _events(envelope: bytes) -> Iterator[dict[str, Any]]:
    """The `event` items of a Sentry envelope: a header line, then per item a header line
    and a payload (`length` bytes when given, else up to the next newline)."""
    _, _, rest = envelope.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = orjson.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :].lstrip(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        if header.get("type") == "event":
            yield orjson.loads(payload)


SECRETS = (JWT_SECRET, METRICS_TOKEN, PROVIDER_KEY, CLIENT_KEY, COOKIE, DEFAULT_API_KEY)


def assert_no_secret(stand_in: SentryStandIn) -> None:
    sent = b"".join(stand_in.envelopes)
    for secret in SECRETS:
        assert secret.encode() not in sent, secret


@pytest.fixture
async def stand_in() -> AsyncIterator[SentryStandIn]:
    server = SentryStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def reporting() -> Iterator[None]:
    yield
    # Back to no client: the integrations stay patched but send nothing.
    sentry_sdk.flush(timeout=5)
    sentry_sdk.get_client().close()
    sentry_sdk.init(dsn=None)


async def test_an_unhandled_error_in_a_route_is_reported_without_secrets(
    settings: Settings, fake_upstream: FakeUpstream, stand_in: SentryStandIn, reporting: None
) -> None:
    configured = settings.model_copy(
        update={
            "providers": providers(fake_upstream, oai={"api_key": PROVIDER_KEY}),
            "jwt_secret": SecretStr(JWT_SECRET),
            "metrics_token": SecretStr(METRICS_TOKEN),
            "sentry_dsn": SecretStr(stand_in.dsn),
        }
    )
    assert error_reports.install(configured, component="api")
    app: FastAPI = create_app(configured)

    async def broken_route() -> None:
        provider_key = PROVIDER_KEY  # a frame variable, sent with the stack
        raise RuntimeError(f"upstream refused {provider_key} (signed with {JWT_SECRET})")

    app.add_api_route("/broken", broken_route, methods=["POST"])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
            response = await http.post(
                "/broken",
                headers={
                    "Authorization": f"Bearer {CLIENT_KEY}",
                    "X-Api-Key": CLIENT_KEY,
                    "Cookie": f"session={COOKIE}",
                },
                json={"password": JWT_SECRET, "metrics": METRICS_TOKEN},
            )
        assert response.status_code == 500
        await asyncio.to_thread(sentry_sdk.flush, 5)
        event = await stand_in.wait_event()

    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == (
        f"upstream refused {error_reports.FILTERED} (signed with {error_reports.FILTERED})"
    )
    assert event["tags"]["component"] == "api"
    assert_no_secret(stand_in)


@pytest.mark.services
async def test_an_error_in_a_worker_task_is_reported_without_secrets(
    settings: Settings,
    workers: Workers,  # noqa: F811 - the imported fixture
    stand_in: SentryStandIn,
) -> None:
    workers.env.update(
        {
            "APIARY_SENTRY_DSN": stand_in.dsn,
            "APIARY_JWT_SECRET": JWT_SECRET,
            "APIARY_METRICS_TOKEN": METRICS_TOKEN,
            "APIARY_LOG_LEVEL": "INFO",
        }
    )
    workers.start()
    # A message no execution id can be read from: the task raises, unhandled. The bad id
    # carries a secret, which lands in the task's arguments and the stack's variables.
    producer = _producer(str(TEST_REDIS), settings.swarm.visibility_timeout_s)
    await asyncio.to_thread(producer.send_task, TASK_NAME, args=[f"not-an-id {PROVIDER_KEY}"])
    event = await stand_in.wait_event(timeout_s=60)

    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ValueError"
    assert event["tags"]["component"] == "worker"
    assert event["server_name"] == "worker"
    sent = b"".join(stand_in.envelopes)
    assert error_reports.FILTERED.encode() in sent  # the secret was there, and replaced
    assert_no_secret(stand_in)
    assert os.environ.get("APIARY_SENTRY_DSN") is None  # this process sent nothing itself
