"""Security headers on every response the app's middleware stack answers.

- `X-Content-Type-Options: nosniff`: a browser never guesses a type the server did not send
  (an uploaded document served back as HTML, a JSON error read as script).
- `Referrer-Policy: no-referrer`: nothing of a URL leaves with a link (the WebSocket takes a
  token in its query string).
- `Content-Security-Policy`, by what the response is. The dashboard's HTML may load scripts,
  styles and images from its own origin only and talk to its own API (and the OIDC issuer,
  whose discovery document the sign-in page reads); no inline script, no plugin, no other
  base or form target. The interactive API docs (`/docs`, `/redoc`) load FastAPI's pages
  from the jsDelivr CDN with an inline bootstrap script, so theirs allows exactly that.
  Everything else (JSON, events, files) gets `default-src 'none'`. Every policy has
  `frame-ancestors 'none'` (with `X-Frame-Options: DENY` for older browsers): no page of
  Apiary can be framed to trick a click.
- `Strict-Transport-Security` only on a request that came over TLS: directly, or through a
  trusted proxy that said `X-Forwarded-Proto: https` (`apiary.auth.forwarded`). Sent over
  plain HTTP it would be ignored, and a deployment that is not on TLS must not be pinned to it.

The OpenAI- and Anthropic-compatible hot routes (`/v1/chat/completions`, `/v1/messages`, ...)
bypass this stack for speed; their callers are SDKs, not browsers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = b"max-age=31536000; includeSubDomains"
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_CDN = "https://cdn.jsdelivr.net"
DOCS_CSP = (
    f"default-src 'none'; script-src 'self' 'unsafe-inline' {_CDN}; "
    f"style-src 'self' 'unsafe-inline' {_CDN}; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'"
).encode()


def dashboard_csp(oidc_issuer: str | None = None) -> bytes:
    """The dashboard's policy; `oidc_issuer`'s origin may be read (its discovery document)."""
    connect = "'self'"
    if oidc_issuer:
        parts = urlsplit(oidc_issuer)
        if parts.scheme in ("http", "https") and parts.netloc:
            connect += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src {connect}; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ).encode()


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, oidc_issuer: str | None = None) -> None:
        self.app = app
        self._dashboard_csp = dashboard_csp(oidc_issuer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"  # after a trusted proxy's X-Forwarded-Proto
        docs = scope["path"] in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", self._policy(headers, docs)))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if tls:
                    headers.append((b"strict-transport-security", HSTS))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _policy(self, headers: list[tuple[bytes, bytes]], docs: bool) -> bytes:
        content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
        if not content_type.startswith(b"text/html"):
            return API_CSP
        return DOCS_CSP if docs else self._dashboard_csp
