"""An ASGI app behind a real uvicorn on 127.0.0.1, with the HTTP protocol `apiary serve`
uses, for clients that need a socket (browsers' WebSockets, fuzzers, raw HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from apiary.http_protocol import ApiaryHttpProtocol


@asynccontextmanager
async def serving(app: ASGIApp, *, lifespan: Literal["on", "off"] = "off") -> AsyncIterator[str]:
    """Serve `app` on a free port for the block; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=ApiaryHttpProtocol, log_config=None, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # up to 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
