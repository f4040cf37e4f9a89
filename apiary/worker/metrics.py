"""`apiary worker --metrics-port`: the worker's own `GET /metrics`, for Prometheus.

A swarm's model calls run in the worker, not in `apiary serve`: their calls, tokens, cost,
upstream latency, limit refusals and ledger writes are counted in this process's registry,
and its gateway has breakers of its own. A small threaded HTTP server (the standard
library's; the worker has no ASGI server) answers the scrape with the same rules as the
API's: the bearer token `APIARY_METRICS_TOKEN` when set, else only a direct loopback peer.
The threads and solo pools run every task in this process; a prefork worker's tasks run in
children whose figures this process cannot see, so it serves none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from apiary.observability.metrics import REGISTRY, scrape_refusal

log = logging.getLogger("apiary.worker")

_RELAY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def serve_metrics(
    host: str, port: int, *, token: str | None, extra: Callable[[], bytes]
) -> ThreadingHTTPServer:
    """Start answering `GET /metrics` on a daemon thread; `extra()` adds figures worked
    out at scrape time (this process's breakers, pool and ledger writer)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b'{"error": "NotFound", "detail": "only GET /metrics"}')
                return
            refusal = scrape_refusal(
                token=token,
                authorization=self.headers.get("authorization"),
                peer=self.client_address[0],
                relayed=any(name in self.headers for name in _RELAY_HEADERS),
            )
            if refusal is not None:
                status, detail = refusal
                error = "Unauthorized" if status == 401 else "Forbidden"
                body = f'{{"error": "{error}", "detail": "{detail}"}}'.encode()
                self._answer(status, body)
                return
            try:
                state = extra()
            except Exception:  # the traffic counters are still worth answering with
                log.exception("worker metrics: the scrape-time figures failed")
                state = b""
            self._answer(200, generate_latest(REGISTRY) + state, CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scraped every few seconds: not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="apiary-metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
