"""Schemathesis over every operation of /openapi.json, as a tenant admin of a seeded tenant,
against a real uvicorn serving the app (issue 14): no response is a 5xx, every response
matches its documented schema, and every status code it answers is documented.

The run goes through schemathesis's own CLI (`st run`), whose phases are what its users get:
the spec's examples, boundary values for every parameter (the coverage phase, which sends
integers past 64 bits and strings past their limits), random valid and invalid data, and
stateful sequences that follow the spec's links from a create to its read, update and
delete. /v1 calls reach the fake upstream, so they cost no model time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from apiary.config import Settings
from apiary.gateway.config import RouteConfig
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import make_tenant
from tests.fakes import FakeUpstream
from tests.gateway.conftest import providers
from tests.serving import serving

ST = Path(sys.executable).parent / "st"
# Examples per operation and phase; `APIARY_FUZZ_EXAMPLES` raises it for a longer run.
EXAMPLES = int(os.environ.get("APIARY_FUZZ_EXAMPLES", "40"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Signing out ends the session every later request authenticates with.
EXCLUDED_PATHS = ["/api/v1/auth/logout"]


@dataclass
class Served:
    url: str
    runtime: Runtime


@pytest.fixture
async def served_gateway(
    settings: Settings,
    runtime: Runtime,
    fake_upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Served]:
    """The app with its providers on the fake upstream, behind a real uvicorn."""
    configured = settings.model_copy(
        update={
            # Its own data dir: Qdrant's local mode lets one client hold a folder.
            "data_dir": tmp_path_factory.mktemp("fuzz-data"),
            "providers": providers(fake_upstream),
            "routes": {"default": RouteConfig(models=["oai/gpt-4o-mini"])},
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app), serving(app) as url:
        yield Served(url, app.state.runtime)


async def test_every_operation_survives_the_fuzzer(
    served_gateway: Served, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    tenant = await make_tenant(served_gateway.runtime, client, "fuzzed")
    command = [
        str(ST),
        "run",
        f"{served_gateway.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "14",
        "--workers",
        "2",
        "--header",
        f"Authorization: Bearer {tenant.admin.token}",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *[arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)],
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,  # its example database and reports stay out of the checkout
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=900)
    report = output.decode(errors="replace")
    print(report)  # the phases and counts, in the log of a passing run too
    assert process.returncode == 0, report
    assert "operations" in report.lower()


async def test_every_graphql_field_survives_the_fuzzer(
    served_gateway: Served, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The same run over /graphql (issue 22): schemathesis reads the schema by introspection
    and sends every query and mutation field generated arguments and selections (it does not
    open subscriptions; tests/graphql does). None may answer a server error: a 5xx, or an
    error its `code` does not put on the caller (see apiary/graphql/errors.py)."""
    tenant = await make_tenant(served_gateway.runtime, client, "fuzzed-graphql")
    command = [
        str(ST),
        "run",
        f"{served_gateway.url}/graphql",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "22",
        "--workers",
        "2",
        "--header",
        f"Authorization: Bearer {tenant.admin.token}",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=900)
    report = output.decode(errors="replace")
    print(report)
    assert process.returncode == 0, report
    assert "operations" in report.lower()
    assert "InternalError" not in report
