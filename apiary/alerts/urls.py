"""Which webhook URLs Apiary will call: http(s) only, and no private network (SSRF).

A tenant chooses the URL and Apiary's servers call it, so a URL naming (or resolving to) a
loopback, private, link-local (cloud metadata at 169.254.169.254), multicast or reserved
address would let a tenant reach what only Apiary's network can. The check runs when a
channel is saved and again before every attempt (a name may resolve elsewhere later);
redirects are never followed. `APIARY_ALERTS__ALLOW_PRIVATE_URLS=true` lifts it for a
deployment whose receivers live inside its own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_S = 5.0


class UnsafeUrl(ValueError):
    """A URL Apiary will not call; the message says why, for a person to read."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def parse_http_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; UnsafeUrl for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl(f"not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"must start with http:// or https://, not {parts.scheme or 'nothing'}")
    if not parts.hostname:
        raise UnsafeUrl("names no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("may not carry a user name or password (the signature proves the sender)")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UnsafeUrl unless `url` is an http(s) URL whose host is public (every address
    it resolves to), or private addresses are allowed."""
    host, port = parse_http_url(url)
    if allow_private:
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise UnsafeUrl(f"host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    for address in addresses:
        if not _public(address):
            raise UnsafeUrl(
                f"host {host!r} is a private, loopback or link-local address ({address}); "
                "Apiary calls only public addresses (APIARY_ALERTS__ALLOW_PRIVATE_URLS "
                "lifts this for receivers inside the deployment's network)"
            )
