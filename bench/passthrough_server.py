"""The floor under the gateway: a bare pass-through on the same server stack, for the benchmark.

`bench/gateway.py --floor` runs this beside `apiary serve`: the same uvicorn setup (uvloop,
httptools, `apiary.http_protocol.ApiaryHttpProtocol`, no access log) and the same upstream
client (`apiary.gateway.http.HttpClient`), and nothing else: no authentication, limits,
routing, ledger, metrics or logging. It forwards `POST /v1/chat/completions` to the
upstream as it came and relays the answer (JSON, or the SSE stream line by line). What it
adds to the direct call is what one more HTTP hop through Python costs on this machine;
what Apiary adds beyond it is the gateway's own work.

    .venv/bin/python bench/passthrough_server.py --upstream http://127.0.0.1:PORT --port N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn

# Appended, so a snapshot named on PYTHONPATH (bench/gateway.py --ref) comes first.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from apiary.gateway.http import HttpClient  # needs the repo root on sys.path
from apiary.http_protocol import ApiaryHttpProtocol

Message = dict[str, Any]


def build(upstream: str, key: str) -> Any:
    client = HttpClient()
    target = f"{upstream}/v1/chat/completions"
    upstream_headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        response = await client.post(target, body, upstream_headers, timeout_s=30)
        try:
            stream = "text/event-stream" in response.headers.get("content-type", "")
            headers = [(b"content-type", response.headers["content-type"].encode())]
            start = {"type": "http.response.start", "status": response.status, "headers": headers}
            if not stream:
                answer = await response.read()
                headers.append((b"content-length", str(len(answer)).encode()))
                await send(start)
                await send({"type": "http.response.body", "body": answer})
                return
            await send(start)
            async for line in response.lines():
                await send({"type": "http.response.body", "body": line + b"\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.release()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the fake upstream's base URL")
    parser.add_argument("--key", required=True, help="its API key")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.upstream, args.key),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        http=ApiaryHttpProtocol,
    )


if __name__ == "__main__":
    main()
