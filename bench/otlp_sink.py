"""A local OTLP/HTTP receiver for bench/gateway.py's `--tracing`: it takes each export
(`POST /v1/traces`, protobuf) and answers it as a collector does, counting exports and
bytes, which `GET /stats` returns. It prints `PORT <n>` once listening."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

received = {"exports": 0, "bytes": 0}


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    received["exports"] += 1
    received["bytes"] += len(body)
    # An empty ExportTraceServiceResponse: everything accepted.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(received)


async def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
