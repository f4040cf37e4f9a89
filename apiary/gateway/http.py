"""A small keep-alive HTTP/1.1 client for provider calls, one connection pool per process.

Every provider call is the same exchange: POST a JSON body, read back JSON or a stream of
server-sent events. This client does exactly that and nothing else, on asyncio's transports
with httptools (the C parser uvicorn uses) reading the responses: `Content-Length` and
chunked bodies, TLS from the standard `ssl` module, connections reused per origin, a
deadline for the whole exchange. There are no redirects, cookies, proxies or compression
(we send no `Accept-Encoding`), none of which a provider API needs. On this machine it
costs about a quarter of the CPU of an aiohttp request (`bench/http_client.py`), and the
client side of a call is most of what the gateway itself spends.

A connection goes back to its pool as soon as its response has arrived in full (the body
stays buffered in the `Response`); one whose response was abandoned half-read is closed.
A request that fails on a reused connection before any byte of the answer came back (the
server had closed the idle connection) is sent once more on a new connection, as urllib3
and browsers do: the server never saw it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectError", "HttpClient", "HttpError", "Response", "ResponseDropped"]

MAX_BODY_BYTES = 64 * 1024 * 1024
_USER_AGENT = "apiary-gateway"


class HttpError(Exception):
    """The exchange failed: no usable answer came back."""


class ConnectError(HttpError):
    """No connection could be opened to the upstream."""


class ResponseDropped(HttpError):
    """The connection closed, or the upstream spoke broken HTTP, before the answer ended."""


class _Origin:
    """Where requests for one scheme://host:port go, and its idle connections."""

    def __init__(self, scheme: str, host: str, port: int, *, max_idle: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.host_header = host if port in (80, 443) else f"{host}:{port}"
        self.idle: deque[_Connection] = deque()
        self.max_idle = max_idle


class Response:
    """An answer: status and headers at once, the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}  # names in lower case
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self._complete:
            await self._more()
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def lines(self) -> AsyncIterator[bytes]:
        """The body split into lines (without their line ends), as they arrive."""
        pending = b""
        while True:
            while self._chunks:
                pending += self._chunks.popleft()
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.rstrip(b"\r")
            if self._complete:
                break
            await self._more()
        if pending:
            yield pending

    def release(self) -> None:
        """Done with this response. A connection still receiving it is closed, not reused."""
        if not self._complete:
            self._connection.close()
        self._connection.finish_timer()

    async def _more(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY_BYTES:
            self._fail(ResponseDropped(f"upstream response over {MAX_BODY_BYTES // 2**20} MiB"))
            self._connection.close()
            return
        self._chunks.append(data)
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: HttpError | TimeoutError) -> None:
        if self._complete:
            return
        self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: it writes requests and parses answers, one at a time."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[None] | None = None
        self.received_any = False
        self.closed = False
        self.reused = False
        self._timer: asyncio.TimerHandle | None = None
        self._header_name = b""

    # -- driving one exchange -----------------------------------------------------------

    def send(self, head: bytes, body: bytes, deadline: float) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.response = Response(self)
        self.headers_ready = loop.create_future()
        self.received_any = False
        self._timer = loop.call_at(deadline, self._time_out)
        self.transport.write(head + body)
        return self.response

    def finish_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _time_out(self) -> None:
        self._timer = None
        error = TimeoutError("upstream timed out")
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(error)
        if self.response is not None:
            self.response._fail(error)
        self.close()

    def _drop(self, reason: str) -> None:
        error = ResponseDropped(reason)
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(error)
        if self.response is not None:
            self.response._fail(error)

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes on an idle connection: the server is confused
            self.close()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._drop("upstream sent invalid HTTP")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and response.status and _delimited_by_close(response.headers):
            response._finish()  # an HTTP/1.0-style body: it ends when the connection does
        else:
            self._drop("upstream closed the connection")
        self.finish_timer()

    # -- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.response is not None
        assert self.headers_ready is not None
        self.response.status = self.parser.get_status_code()
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response._finish()
        self.finish_timer()
        origin = self.origin
        if (
            self.parser.should_keep_alive()
            and not self.closed
            and len(origin.idle) < origin.max_idle
        ):
            self.parser = httptools.HttpResponseParser(self)
            self.response, self.headers_ready, self.reused = None, None, True
            origin.idle.append(self)
        else:
            self.close()


def _delimited_by_close(headers: dict[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


class HttpClient:
    """The process's pool of upstream connections, shared by every provider adapter.

    HTTP/1.1 carries one request at a time per connection, so ten swarms of 100 sub-agents
    hold a thousand connections to one provider; up to `max_idle_per_origin` of them stay
    open afterwards, so the next fan-out does not connect again."""

    def __init__(
        self, *, max_idle_per_origin: int = 1024, tls: ssl.SSLContext | None = None
    ) -> None:
        self._origins: dict[str, _Origin] = {}
        self._ssl = tls  # the system's trust store unless given
        self._max_idle = max_idle_per_origin

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> Response:
        """Send `body` and wait for the answer's status and headers; read the body from the
        `Response`, then `release()` it. Raises `HttpError` or `TimeoutError`."""
        origin, target = self._origin(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        head = self._head(origin, target, len(body), headers)
        for _ in range(2):
            connection = await self._connection(origin, min(connect_timeout_s, timeout_s))
            response = connection.send(head, body, deadline)
            assert connection.headers_ready is not None
            try:
                await connection.headers_ready
            except ResponseDropped:
                if connection.reused and not connection.received_any:
                    connection.finish_timer()
                    continue  # a stale pooled connection: the server never saw the request
                raise
            except BaseException:
                connection.close()  # cancelled or timed out: never reuse a connection mid-answer
                raise
            return response
        raise ResponseDropped("upstream closed the connection")

    async def close(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()
        self._origins.clear()

    def _origin(self, url: str) -> tuple[_Origin, str]:
        origin_key, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        key = f"{origin_key}://{authority}"
        origin = self._origins.get(key)
        if origin is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConnectError(f"unsupported upstream URL scheme: {parts.scheme or url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            origin = _Origin(parts.scheme, parts.hostname, port, max_idle=self._max_idle)
            self._origins[key] = origin
        return origin, slash + path if slash else "/"

    @staticmethod
    def _head(origin: _Origin, target: str, length: int, headers: dict[str, str]) -> bytes:
        lines = [
            f"POST {target} HTTP/1.1",
            f"host: {origin.host_header}",
            f"user-agent: {_USER_AGENT}",
            f"content-length: {length}",
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connection(self, origin: _Origin, timeout_s: float) -> _Connection:
        while origin.idle:
            connection = origin.idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise ConnectError(f"connecting to {origin.host}:{origin.port} timed out") from None
        except OSError as error:
            raise ConnectError(
                f"cannot connect to {origin.host}:{origin.port}: {error.strerror or error}"
            ) from None
        return protocol

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
