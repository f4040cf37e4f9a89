"""The gateway's upstream HTTP client against a raw local server that answers byte for byte
what each test scripts: reuse, stale connections, body framings, timeouts, cut answers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop

from apiary.gateway.http import ConnectError, HttpClient, ResponseDropped
from tests.fakes.tls import self_signed_certificate

Answer = Callable[[bytes], bytes | None]  # request bytes -> response bytes (None: hang)


def ok(body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + ("connection: close\r\n" if close else "") + "\r\n").encode() + body


@dataclass
class RawServer:
    """Reads each request in full, then writes what `answer` returns for it."""

    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                response = self.answer(request)
                if response is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(response)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


StartServer = Callable[[Answer], Awaitable[RawServer]]


@pytest.fixture
async def raw_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(raw.server)
        return raw

    yield start
    for server in servers:
        server.close()


async def test_connections_are_reused(raw_server: StartServer) -> None:
    server = await raw_server(lambda _: ok(b'{"n": 1}'))
    client = HttpClient()
    for _ in range(3):
        response = await client.post(server.url, b"{}", {}, timeout_s=5)
        assert response.status == 200
        assert await response.read() == b'{"n": 1}'
        response.release()
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 2\r\n" in server.requests[0]
    await client.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    raw_server: StartServer,
) -> None:
    server = await raw_server(lambda _: ok(b"{}"))
    server.close_after_answer = True  # every answer ends its connection, silently
    client = HttpClient()
    for _ in range(3):
        response = await client.post(server.url, b"{}", {}, timeout_s=5)
        assert await response.read() == b"{}"
        response.release()
        await asyncio.sleep(0.05)  # let the close arrive, or race it: both must work
    assert server.connections == 3
    await client.close()


async def test_chunked_and_close_delimited_bodies(raw_server: StartServer) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\ndata:\r\n6\r\n one\n\n\r\n9\r\ndata: two\r\n1\r\n\n\r\n0\r\n\r\n"
    )
    server = await raw_server(lambda _: chunked)
    client = HttpClient()
    response = await client.post(server.url, b"{}", {}, timeout_s=5)
    assert [line async for line in response.lines()] == [b"data: one", b"", b"data: two"]
    response.release()

    legacy = await raw_server(lambda _: b'HTTP/1.0 200 OK\r\n\r\n{"old": true}')
    legacy.close_after_answer = True
    response = await client.post(legacy.url, b"{}", {}, timeout_s=5)
    assert await response.read() == b'{"old": true}'
    response.release()
    await client.close()


async def test_error_status_and_headers_are_returned(raw_server: StartServer) -> None:
    answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\ncontent-length: 2\r\n\r\n{}"
    server = await raw_server(lambda _: answer)
    client = HttpClient()
    response = await client.post(server.url, b"{}", {"authorization": "Bearer k"}, timeout_s=5)
    assert (response.status, response.headers["retry-after"]) == (429, "7")
    assert b"\r\nauthorization: Bearer k\r\n" in server.requests[0]
    await response.read()
    response.release()
    await client.close()


async def test_the_deadline_covers_the_whole_exchange(raw_server: StartServer) -> None:
    server = await raw_server(lambda _: None)  # never answers
    client = HttpClient()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await client.post(server.url, b"{}", {}, timeout_s=0.2)
    assert asyncio.get_running_loop().time() - started < 1

    slow_body = await raw_server(
        lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{" + b" " * 10
    )
    response = await client.post(slow_body.url, b"{}", {}, timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await response.read()
    response.release()
    await client.close()


async def test_a_cut_answer_is_an_error_and_its_connection_is_not_reused(
    raw_server: StartServer,
) -> None:
    calls = 0

    def answer(_: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{" if calls == 1 else ok(b"{}")

    server = await raw_server(answer)
    server.close_after_answer = True
    client = HttpClient()
    response = await client.post(server.url, b"{}", {}, timeout_s=5)
    with pytest.raises(ResponseDropped):
        await response.read()
    response.release()
    response = await client.post(server.url, b"{}", {}, timeout_s=5)
    assert await response.read() == b"{}"
    response.release()
    await client.close()


async def test_an_abandoned_stream_closes_its_connection(raw_server: StartServer) -> None:
    server = await raw_server(
        lambda _: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n"
    )
    client = HttpClient()
    response = await client.post(server.url, b"{}", {}, timeout_s=5)
    async for line in response.lines():
        assert line == b"data: 1"
        break
    response.release()  # the rest never came: this connection must not serve another call
    server.answer = lambda _: ok(b"{}")
    response = await client.post(server.url, b"{}", {}, timeout_s=5)
    assert await response.read() == b"{}"
    assert server.connections == 2
    response.release()
    await client.close()


async def test_bad_targets_and_headers_are_refused() -> None:
    client = HttpClient()
    with pytest.raises(ConnectError, match="cannot connect"):
        await client.post("http://127.0.0.1:9/x", b"{}", {}, timeout_s=2)
    with pytest.raises(ConnectError, match="scheme"):
        await client.post("ftp://example.com/x", b"{}", {}, timeout_s=2)
    with pytest.raises(ValueError, match="line break"):
        await client.post("http://127.0.0.1:9/x", b"{}", {"x-key": "a\r\nevil: 1"}, timeout_s=2)


async def test_https_verifies_the_server(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    raw = RawServer(lambda _: ok(b'{"tls": true}'))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1/chat/completions"
    try:
        # The default trust store does not know this certificate: refused.
        with pytest.raises(ConnectError):
            await HttpClient().post(url, b"{}", {}, timeout_s=5)
        trusting = HttpClient(tls=ssl.create_default_context(cafile=str(cert)))
        response = await trusting.post(url, b"{}", {}, timeout_s=5)
        assert await response.read() == b'{"tls": true}'
        response.release()
        await trusting.close()
    finally:
        server.close()


def test_the_client_works_on_uvloop() -> None:
    # `apiary serve` runs on uvloop (uvicorn's default when installed), whose transports
    # are not asyncio's classes; the rest of this file runs on the standard loop.
    stream = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n0\r\n\r\n"

    async def scenario() -> list[bytes]:
        raw = RawServer(lambda request: stream if b'"stream"' in request else ok(b"{}"))
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        client = HttpClient()
        bodies = []
        for body in (b"{}", b'{"stream": true}', b"{}"):
            response = await client.post(raw.url, body, {}, timeout_s=5)
            bodies.append(b"|".join([line async for line in response.lines()]))
            response.release()
        await client.close()
        raw.server.close()
        assert raw.connections == 1
        return bodies

    assert uvloop.run(scenario()) == [b"{}", b"data: 1", b"{}"]
