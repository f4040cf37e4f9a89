"""uvicorn's HTTP protocol, with each response's head and first body part sent together.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and its body at `http.response.body`: two system calls and two
TCP packets for one small JSON answer, so the client is woken twice. On this project's
build machine a write to a loopback socket whose reader sleeps on another core costs
about 30 µs, so the second write was about a twentieth of a `/v1/chat/completions` call's
CPU at concurrency 10 (see docs/benchmarks.md).

`ApiaryHttpProtocol` hands uvicorn a transport that holds a response's head back until
the next write, the first body part, and sends both in one call. The head is never held
past the current turn of the event loop: a streamed response whose first chunk comes
later still gets its headers at once. Everything else passes straight through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "  # how every status line uvicorn writes begins


class _HeadHoldingTransport:
    """A transport's stand-in that keeps a response head for the write that follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self._release)
        else:
            self._transport.write(data)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class ApiaryHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a head-holding transport (`uvicorn.run(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        holding = _HeadHoldingTransport(transport, self.loop)
        super().connection_made(holding)  # type: ignore[arg-type]
