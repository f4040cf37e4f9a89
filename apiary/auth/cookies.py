"""The browser's refresh token: an httpOnly cookie, and the CSRF check for requests using it.

A browser session keeps its refresh token where no script can read it: a cookie that is
`HttpOnly`, `SameSite=Strict`, `Secure` when the request came over TLS (directly or through a
trusted proxy), and sent only to `/api/v1/auth` (refresh, sign-out, sign-in), never to the
rest of the API, whose calls carry the access token the page holds in memory.

A cookie is sent by the browser whatever page asks, so every request that uses it (or asks
for one) must prove it comes from Apiary's own pages (`require_same_origin`): it carries the
`X-Apiary-CSRF` header, which another site's page cannot add to a request to Apiary without
a CORS preflight that Apiary never grants, and its `Origin` (and `Sec-Fetch-Site`), when the
browser sends them, name Apiary's own origin. `SameSite=Strict` alone would keep the cookie
off cross-site requests, but not off a sibling subdomain's (same site, other origin), and not
in a browser that ignores the attribute.

API clients (the SDKs, the CLI) keep posting `refresh_token` in the body and never get or
send the cookie: a token a page must know to send cannot be forged cross-site.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request, Response

from apiary.errors import Forbidden

REFRESH_COOKIE = "apiary_refresh"
COOKIE_PATH = "/api/v1/auth"
CSRF_HEADER = "X-Apiary-CSRF"


def refresh_cookie(request: Request) -> str | None:
    value = request.cookies.get(REFRESH_COOKIE)
    return value or None


def set_refresh_cookie(request: Request, response: Response, token: str, *, max_age: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",  # after a trusted proxy's X-Forwarded-Proto
        httponly=True,
        samesite="strict",
    )


def clear_refresh_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def cleared_cookie_header(request: Request) -> str:
    """A `Set-Cookie` value deleting the cookie, for an error answer to carry: a cookie the
    server refused is not sent again on every page load."""
    response = Response()
    clear_refresh_cookie(request, response)
    return response.headers["set-cookie"]


def require_same_origin(request: Request) -> None:
    """Refuse (403) a request using or asking for the refresh cookie that may have been
    sent by another site's page."""
    if not request.headers.get(CSRF_HEADER):
        raise Forbidden(
            f"the refresh token cookie is used only by requests with the {CSRF_HEADER} "
            "header (API clients: send refresh_token in the body instead)"
        )
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise Forbidden(f"a {fetch_site} request may not use the refresh token cookie")
    origin = request.headers.get("origin")
    if origin is not None and not _own_origin(origin, request):
        raise Forbidden("the request's Origin is not this server's: refresh cookie refused")


def _own_origin(origin: str, request: Request) -> bool:
    # The host the browser addressed (the Host header, which proxies in front keep). The
    # scheme is not compared: behind a TLS proxy not listed in APIARY_TRUSTED_PROXIES the
    # request looks like http while the page is https, and the host alone tells sites apart.
    netloc = urlsplit(origin).netloc.lower()
    return origin != "null" and bool(netloc) and netloc == request.headers.get("host", "").lower()
