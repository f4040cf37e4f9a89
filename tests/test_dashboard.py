"""The dashboard as `apiary serve` serves it: built files at `/`, the single-page app's
index.html for its client-side routes, and API paths that stay JSON when unknown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from apiary.config import Settings
from apiary.main import create_app

pytestmark = pytest.mark.both_databases

INDEX = "<!doctype html><div id=root></div>"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    build = tmp_path / "dist"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text(INDEX)
    (build / "assets" / "index-abc123.js").write_text("console.log('apiary')")
    (build / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside the build")
    return build


async def _client(settings: Settings, dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"web_dist": dist}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
            yield http


@pytest.fixture
async def web(settings: Settings, dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(settings, dist):
        yield http


async def test_root_and_client_side_routes_serve_index_html(web: httpx.AsyncClient) -> None:
    for path in ("/", "/settings/api-keys", "/analytics"):
        response = await web.get(path)
        assert response.status_code == 200, path
        assert response.text == INDEX
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-cache"


async def test_built_files_are_served_and_hashed_assets_cached(web: httpx.AsyncClient) -> None:
    asset = await web.get("/assets/index-abc123.js")
    assert asset.text == "console.log('apiary')"
    assert "immutable" in asset.headers["cache-control"]
    assert (await web.get("/favicon.svg")).text == "<svg/>"


async def test_paths_cannot_climb_out_of_the_build(web: httpx.AsyncClient) -> None:
    response = await web.get("/assets/..%2F..%2Fsecret.txt")
    assert "outside the build" not in response.text


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api", "/v1/nope", "/api/v1/"])
async def test_unknown_api_paths_stay_json_404s(web: httpx.AsyncClient, path: str) -> None:
    response = await web.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


async def test_a_wrong_method_on_an_api_path_stays_a_405(web: httpx.AsyncClient) -> None:
    response = await web.delete("/api/v1/auth/me")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"


async def test_api_routes_are_answered_before_the_dashboard(web: httpx.AsyncClient) -> None:
    response = await web.get("/api/v1/auth/config")
    assert response.status_code == 200
    assert "password" in response.json()
    assert (await web.get("/healthz")).json() == {"status": "ok"}


async def test_without_a_build_it_says_how_to_make_one(settings: Settings, tmp_path: Path) -> None:
    async for http in _client(settings, tmp_path / "missing"):
        response = await http.get("/")
        assert response.status_code == 503
        assert "make web" in response.text
        assert (await http.get("/settings/api-keys")).status_code == 404
        assert (await http.get("/api/v1/nope")).status_code == 404
