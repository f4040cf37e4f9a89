"""Serves the built React dashboard (`web/dist`) at `/`.

It answers only what no route answered: a GET or HEAD outside the API that would be a 404.
A path naming a file in the build gets that file; any other gets the single-page app's
`index.html`, so client-side routes survive a reload. Being a 404 handler rather than a
catch-all route, it leaves every API answer as it was: unknown paths under `/api` and
`/v1` stay JSON 404s, and a wrong method on an API path stays a 405.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

# Where `make web` (vite build) writes the dashboard in a source checkout.
DEFAULT_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
API_PREFIXES = ("/api/", "/v1/")
API_ROOTS = ("/api", "/v1")
_NOT_BUILT = (
    "<!doctype html><title>Apiary</title><p>The dashboard is not built. Run "
    "<code>make web</code> (or <code>make run</code>) and reload. The API is at "
    '<a href="/docs">/docs</a>.</p>'
)


def is_api_path(path: str) -> bool:
    return path in API_ROOTS or path.startswith(API_PREFIXES)


def dashboard_response(root: Path, path: str) -> Response | None:
    """The build's file at `path`, else index.html; None when there is no build."""
    index = root / "index.html"
    if not index.is_file():
        # Only `/` says how to build it; any other path stays the API's plain 404.
        return (
            Response(_NOT_BUILT, status_code=503, media_type="text/html") if path == "/" else None
        )
    relative = path.lstrip("/")
    if relative:
        candidate = (root / relative).resolve()
        # is_relative_to keeps `..` and symlinks from reaching outside the build.
        if candidate.is_relative_to(root) and candidate.is_file():
            immutable = candidate.parent.name == "assets"  # vite puts a hash in these names
            cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
            return FileResponse(candidate, headers={"cache-control": cache})
    return FileResponse(index, headers={"cache-control": "no-cache"})


def mount_dashboard(app: FastAPI, dist: Path) -> None:
    """Wrap the app's HTTP error handler; call it after `install_error_handlers`."""
    root = dist.resolve()
    api_errors = app.exception_handlers[StarletteHTTPException]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404 and request.method in ("GET", "HEAD") and not is_api_path(path):
            page = dashboard_response(root, path)
            if page is not None:
                return page
        response = api_errors(request, exc)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(StarletteHTTPException, on_http_error)
