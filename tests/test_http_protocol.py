"""`apiary serve`'s HTTP protocol: a response's head leaves with its first body part, and
nothing else about HTTP or WebSockets changes (driven through a real uvicorn server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_ws import AsyncWebSocketSession, aconnect_ws
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiary.http_protocol import ApiaryHttpProtocol, _HeadHoldingTransport


async def small(request: Request) -> JSONResponse:
    return JSONResponse({"echo": (await request.body()).decode()})


async def slow_stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.5)
        yield b"late\n"

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"echo {await websocket.receive_text()}")
    await websocket.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, uvicorn.Server]]:
    app = Starlette(
        routes=[
            Route("/small", small, methods=["POST"]),
            Route("/slow", slow_stream),
            WebSocketRoute("/ws", echo),
        ]
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=ApiaryHttpProtocol, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", server
    server.should_exit = True
    await serving


@pytest.fixture
def base_url(served: tuple[str, uvicorn.Server]) -> str:
    return served[0]


async def test_responses_on_one_kept_alive_connection(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        for n in range(20):
            response = await http.post("/small", content=f"call {n}")
            assert response.status_code == 200
            assert response.json() == {"echo": f"call {n}"}
            assert response.headers["content-type"] == "application/json"


async def test_a_served_json_answer_leaves_in_one_write(
    served: tuple[str, uvicorn.Server],
) -> None:
    """On the wire: the server's transport for a kept-alive connection is watched, and one
    small JSON answer is one write holding the status line, headers and body."""
    base_url, server = served
    async with httpx.AsyncClient(base_url=base_url) as http:
        await http.post("/small", content="open the connection")
        [protocol] = server.server_state.connections
        holding: Any = protocol.transport
        assert isinstance(holding, _HeadHoldingTransport)
        watched = _Watched(holding._transport)
        holding._transport = watched  # type: ignore[assignment]  # a stand-in that notes writes
        response = await http.post("/small", content="watched")
    assert response.json() == {"echo": "watched"}
    [write] = watched.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b'{"echo":"watched"}')


class _Watched:
    """The real transport, with its writes noted."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def test_a_stream_s_headers_do_not_wait_for_its_first_chunk(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        started = time.perf_counter()
        async with http.stream("GET", "/slow") as response:
            headers_after = time.perf_counter() - started
            assert response.status_code == 200
            body = await response.aread()
    assert headers_after < 0.3  # the chunk comes 0.5 s later
    assert body == b"late\n"


async def test_websockets_still_upgrade_and_talk(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        ws: AsyncWebSocketSession
        async with aconnect_ws("/ws", http) as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "echo hi"


class Recording:
    """The real transport's side of the stand-in: what was written, in how many calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return f"extra {name}"


async def test_head_and_body_leave_in_one_write() -> None:
    real = Recording()
    transport = _HeadHoldingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.writes == []
    assert transport.get_write_buffer_size() > 0
    transport.write(b"{}")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert transport.get_extra_info("peername") == "extra peername"


async def test_a_held_head_leaves_on_the_next_loop_turn_or_at_close() -> None:
    real = Recording()
    transport = _HeadHoldingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport.write(b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n")
    transport.close()
    assert real.writes[-1].startswith(b"HTTP/1.1 500")
    assert real.closed
