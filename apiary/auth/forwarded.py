"""Who is calling, behind a reverse proxy: `X-Forwarded-For` and `X-Forwarded-Proto`, believed
only when the TCP peer is one of `APIARY_TRUSTED_PROXIES`.

`TrustedProxies.resolve` runs once per HTTP request and WebSocket, at the app's entry (before
the router and the gateway's hot path), and rewrites the ASGI scope's `client` and `scheme`.
Everything after it reads those: `client_ip` (the sign-in throttle, the audit log's address,
the API key check), and `request.url` (redirects and any other URL the app generates). From
any other peer the headers are ignored, so a client cannot choose its own address.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import HTTPConnection
from starlette.types import Scope

Network = IPv4Network | IPv6Network


def client_ip(connection: HTTPConnection) -> str | None:
    """The client's address, for the whole app: the proxy's word for it when the proxy is
    trusted (see `TrustedProxies.resolve`), else the TCP peer's."""
    return connection.client.host if connection.client else None


def _address(value: str) -> IPv4Address | IPv6Address | None:
    """An address from one forwarded hop: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:5678` or `::1`."""
    value = value.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return ip_address(value)
    except ValueError:
        return None


class TrustedProxies:
    def __init__(self, networks: Sequence[Network]) -> None:
        self._networks = tuple(networks)

    def trusts(self, address: IPv4Address | IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self._networks)

    def resolve(self, scope: Scope) -> None:
        """Rewrite `scope` from the forwarded headers if its peer is a trusted proxy."""
        client = scope.get("client")
        if not client or not self.trusts(_address(str(client[0]))):
            return
        forwarded_for: list[str] = []
        proto: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-proto":
                # Proxies set this one; if several did, the nearest (rightmost) speaks last.
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = proto
        # Each proxy appends the address it was called from, so read from the right: the
        # first hop that is not one of our proxies is the client. Anything before it was
        # written by the client and proves nothing.
        found: str | None = None
        for hop in reversed(forwarded_for):
            address = _address(hop)
            if address is None:
                break  # garbage: keep the last hop a trusted proxy vouched for
            found = str(address)
            if not self.trusts(address):
                break
        if found is not None:
            scope["client"] = (found, 0)
