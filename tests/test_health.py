"""What an operator's probes and scrapers see: liveness, readiness that names the failing
dependency, Prometheus metrics by route template, request ids on every response, and a
500 that says nothing about the code behind it.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from apiary import migrations
from apiary.config import Settings
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import METRICS_HEADERS, make_tenant
from tests.serving import serving

pytestmark = pytest.mark.both_databases

REQUEST_ID = re.compile(r"[0-9a-f]{32}")
UNREACHABLE_POSTGRES = "postgresql+asyncpg://x@127.0.0.1:1/x"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
TEST_REDIS = os.environ.get("APIARY_TEST_REDIS_URL") or None


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """`app` with its lifespan running, behind an HTTP client that sees 500s as responses."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
            yield http


def _own_settings(tmp_path: Path, **overrides: str) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url": None,
        "redis_url": None,
        "environment": "test",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _requests_total(exposition: str) -> dict[tuple[str, str, str], float]:
    """apiary_http_requests_total by (method, route, status)."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "apiary_http_requests_total":
                labels = sample.labels
                counts[(labels["method"], labels["route"], labels["status"])] = sample.value
    return counts


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    if TEST_REDIS:
        assert body["checks"]["redis"] == "ok"
    else:
        assert "redis" not in body["checks"]  # embedded mode has no Redis to wait for
    assert set(body["checks"].values()) == {"ok"}


async def test_readyz_is_503_naming_an_unreachable_database(tmp_path: Path) -> None:
    app = create_app(_own_settings(tmp_path, database_url=UNREACHABLE_POSTGRES))
    async with _serving(app) as http:
        assert (await http.get("/healthz")).status_code == 200  # alive, ...
        response = await http.get("/readyz")  # ... but not ready
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("failed")
    assert "x@127.0.0.1" not in response.text  # no connection string leaks out


async def test_readyz_is_503_naming_an_unreachable_redis(tmp_path: Path) -> None:
    settings = _own_settings(tmp_path, redis_url=UNREACHABLE_REDIS)
    await asyncio.to_thread(migrations.upgrade, settings.sqlalchemy_url)
    app = create_app(settings)
    async with _serving(app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("failed")


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    before = _requests_total((await client.get("/metrics", headers=METRICS_HEADERS)).text)
    assert (await client.get("/api/v1/auth/me", headers=tenant.admin.headers)).status_code == 200
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    member_id = uuid.uuid4()
    missing = await client.get(f"/api/v1/members/{member_id}", headers=tenant.admin.headers)
    assert missing.status_code == 404

    scrape = await client.get("/metrics", headers=METRICS_HEADERS)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    after = _requests_total(scrape.text)

    def delta(key: tuple[str, str, str]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(("GET", "/api/v1/auth/me", "200")) == 1
    assert delta(("GET", "/api/v1/auth/me", "401")) == 1
    # Labelled by the template, never the raw path: ids would make the series unbounded.
    assert delta(("GET", "/api/v1/members/{membership_id}", "404")) == 1
    assert str(member_id) not in scrape.text
    assert "apiary_http_request_duration_seconds_bucket" in scrape.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 401),
        ("GET", "/api/v1/auth/me", 401),
        ("POST", "/api/v1/auth/login", 422),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/healthz", 405),
    ],
)
async def test_every_response_carries_a_request_id(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == status
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])
    again = await client.request(method, path, json={} if method == "POST" else None)
    assert again.headers["x-request-id"] != response.headers["x-request-id"]


async def test_a_caller_supplied_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"
    # One that could forge log lines is replaced, not echoed.
    odd = await client.get("/healthz", headers={"x-request-id": "a b"})
    assert REQUEST_ID.fullmatch(odd.headers["x-request-id"])


async def test_unhandled_error_is_a_bare_500(tmp_path: Path) -> None:
    app = create_app(_own_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    async with _serving(app) as http:
        response = await http.get("/boom")
        after = await http.get("/healthz")  # the process carries on
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "InternalError"
    request_id = response.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(request_id)
    assert request_id in body["detail"]  # quotable to an operator, who finds it in the logs
    for leak in ("Traceback", "RuntimeError", "hunter2", "boom", ".py"):
        assert leak not in response.text
    assert after.status_code == 200


async def test_readyz_is_503_on_a_database_never_migrated(tmp_path: Path) -> None:
    # `apiary serve` on a data dir nobody ran `apiary init` on: the database answers, but
    # every sign-in would be a 500 "no such table", so it is not ready.
    app = create_app(_own_settings(tmp_path))
    async with _serving(app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "failed: not migrated: run `apiary migrate`"


async def test_readyz_is_503_on_a_schema_behind_the_code(tmp_path: Path) -> None:
    settings = _own_settings(tmp_path)
    previous = migrations.revisions()[1]
    await asyncio.to_thread(migrations.upgrade, settings.sqlalchemy_url, previous)
    app = create_app(settings)
    async with _serving(app) as http:
        behind = await http.get("/readyz")
        await asyncio.to_thread(migrations.upgrade, settings.sqlalchemy_url)
        current = await http.get("/readyz")
    assert behind.status_code == 503
    assert behind.json()["checks"]["database"] == (
        f"failed: schema at revision {previous}, this code needs "
        f"{migrations.revisions()[0]}: run `apiary migrate`"
    )
    assert current.status_code == 200, current.text


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open connection, read to the end of its response."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: apiary.test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {
        name.lower(): value
        for name, _, value in (line.partition(": ") for line in header_lines if line)
    }
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def test_a_500_keeps_the_connection_alive(tmp_path: Path) -> None:
    # A pooled keep-alive connection that got a 500 carries the client's next request: the
    # server does not drop it silently (a client then sees ECONNRESET on its next call).
    app = create_app(_own_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("an unexpected failure")

    async with serving(app, lifespan="on") as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await _http_exchange(reader, writer, "/boom")
        assert status == 500
        assert b"InternalError" in body
        assert headers.get("connection") != "close"
        # The same connection answers the next request.
        status, _, body = await _http_exchange(reader, writer, "/healthz")
        assert (status, body) == (200, b'{"status":"ok"}')
        writer.close()


async def test_metrics_without_a_token_answer_only_a_direct_local_scraper(tmp_path: Path) -> None:
    # The figures span every tenant (cost, calls): a visitor from another host, or one relayed
    # by a proxy on this machine, is refused; a Prometheus on this machine scrapes.
    app = create_app(_own_settings(tmp_path))
    async with app.router.lifespan_context(app):
        for client_host, headers, status in [
            ("127.0.0.1", {}, 200),
            ("203.0.113.9", {}, 403),
            ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, 403),
        ]:
            transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://a.test") as http:
                response = await http.get("/metrics", headers=headers)
            assert response.status_code == status, (client_host, headers)
            if status != 200:
                assert "APIARY_METRICS_TOKEN" in response.json()["detail"]
                assert "apiary_http_requests_total" not in response.text


async def test_metrics_with_a_token_need_it_from_everyone(tmp_path: Path) -> None:
    token = "scrape-" + "s" * 30
    app = create_app(_own_settings(tmp_path, metrics_token=token))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://a.test") as http:
            missing = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"] == "Unauthorized"
    assert token not in missing.text + wrong.text
    assert "apiary_http_requests_total" in right.text
