"""Anchors of the audit chain's head sent off the database on a schedule (to a URL and a
file) and by `apiary audit anchor --url`: received by a real HTTP server, then checked with
`verify --anchors` as an auditor would."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from apiary.audit.anchoring import AnchorSchedule
from apiary.audit.service import audit_service
from apiary.config import AuditSettings
from apiary.runtime import Runtime
from tests.factories import make_tenant

both_databases = pytest.mark.both_databases
APIARY_BIN = Path(sys.executable).parent / "apiary"


@dataclass
class Collector:
    """An anchor receiver: answers with the scripted statuses (200 once they run out)."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} anchors, wanted {count}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    app = web.Application()
    app.router.add_post("/anchors", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/anchors?key=s3cret-in-query"
    yield found
    await runner.cleanup()


@both_databases
async def test_the_api_anchors_the_head_to_a_url_and_a_file_on_a_schedule(
    client: httpx.AsyncClient,
    runtime: Runtime,
    collector: Collector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_tenant(runtime, client, "acme")
    anchors_file = tmp_path / "anchors.jsonl"
    settings = AuditSettings(
        anchor_url=collector.url,
        anchor_token=SecretStr("anchor-token-123"),
        anchor_file=anchors_file,
        anchor_interval_s=0.05,
    )
    collector.statuses = [503]  # the receiver is down at first: the next tick sends again
    schedule = AnchorSchedule(runtime.session_factory, settings)
    with caplog.at_level(logging.INFO, logger="apiary.audit"):
        schedule.start()
        try:
            await collector.wait_for(3)
        finally:
            await schedule.close()

    headers, body = collector.received[-1]
    assert headers["Authorization"] == "Bearer anchor-token-123"
    anchor = orjson.loads(body)
    async with runtime.session_factory() as session:
        head = await audit_service.anchor(session)
        assert (anchor["entries"], anchor["hash"]) == (head["entries"], head["hash"])
        # The file holds the same anchors, one a line, and each one checks.
        written = [orjson.loads(line) for line in anchors_file.read_bytes().splitlines()]
        assert len(written) >= 3
        report = await audit_service.check_anchors(session, written)
    assert report.ok, report
    assert "anchoring the audit chain failed (HTTPStatusError)" in caplog.text
    assert "s3cret-in-query" not in caplog.text
    assert "anchor-token-123" not in caplog.text


async def test_without_a_url_or_a_file_nothing_is_scheduled(runtime: Runtime) -> None:
    schedule = AnchorSchedule(runtime.session_factory, AuditSettings())
    schedule.start()
    assert not schedule.enabled
    await schedule.close()


async def test_cli_anchor_posts_to_a_url(collector: Collector, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def apiary(*args: str) -> tuple[int, bytes, bytes]:
        process = await asyncio.create_subprocess_exec(
            str(APIARY_BIN),
            *args,
            env={"APIARY_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out, err

    assert (await apiary("init"))[0] == 0
    code, out, err = await apiary("audit", "anchor", "--url", collector.url)
    assert code == 0, err
    [(_, body)] = collector.received
    assert orjson.loads(body) == orjson.loads(out)

    collector.statuses = [500]
    code, _, err = await apiary("audit", "anchor", "--url", collector.url)
    assert code == 1
    assert b"cannot post the anchor to http://127.0.0.1" in err
    assert b"answered 500" in err
    assert b"s3cret-in-query" not in err
    code, _, err = await apiary("audit", "anchor")
    assert code == 2
    assert b"--output FILE, --url URL, or both" in err
