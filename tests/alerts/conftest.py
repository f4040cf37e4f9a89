"""Fixtures for alerts: a real HTTP receiver on 127.0.0.1 (aiohttp) whose answers a test
scripts, a real SMTP server (aiosmtpd), and the receiver's side of signature checking,
written from the README's recipe rather than imported from Apiary."""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from apiary.config import AlertSettings
from tests.conftest import TEST_ALERTS
from tests.factories import Caller
from tests.gateway.conftest import make_gateway

__all__ = ["make_gateway"]


def alert_settings(**overrides: Any) -> AlertSettings:
    """The session app's alert settings (fast retries, receivers on 127.0.0.1), for an app
    of a test's own: every process sending alerts from one database has the same ones."""
    return AlertSettings.model_validate(TEST_ALERTS.model_dump() | overrides)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


def verify_signature(secret: str, received: Received, *, tolerance_s: int = 300) -> bool:
    """The README's recipe: HMAC-SHA256 over "<timestamp>.<raw body>" with the whole secret,
    compared with each v1= value in constant time; the timestamp within five minutes."""
    timestamp = received.headers["Apiary-Webhook-Timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    offered = [
        part.split("=", 1)[1]
        for part in received.headers["Apiary-Webhook-Signature"].split(",")
        if part.startswith("v1=")
    ]
    return any(hmac.compare_digest(expected, value) for value in offered)


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next scripted (status, headers),
    200 when the script is empty, and keeps every request."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body, time.monotonic()))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.requests)} webhook(s) received, waited for {count}"
            )
            await asyncio.sleep(0.02)
        return self.requests

    def of_kind(self, kind: str) -> list[Received]:
        return [r for r in self.requests if r.event["kind"] == kind]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    await runner.cleanup()


@dataclass
class Mailbox:
    """What a real SMTP server (aiosmtpd) accepted."""

    messages: list[tuple[Envelope, Message]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, email.message_from_bytes(content)))
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[tuple[Envelope, Message]]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.messages)} e-mail(s), waited for {count}"
            )
            await asyncio.sleep(0.02)
        return self.messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


async def add_channel(http: httpx.AsyncClient, caller: Caller, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/alerts/channels", headers=caller.headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
