"""Liveness and readiness: `/healthz` says the process answers, `/readyz` that its
dependencies (the database; Redis when configured) answer too."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import inspect, text

from apiary import migrations
from apiary.runtime import RuntimeDep

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 2.0


class SchemaNotReady(Exception):
    """The database answers, but its schema is not the one this code was written for."""


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database (and Redis, when configured) answer",
    responses={503: {"description": "Not ready: `checks` names the failed dependency and why"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}

    async def database() -> None:
        # A database that answers but was never migrated (or is behind this code) would
        # answer every sign-in and key with a 500, so it is not ready either.
        async with runtime.engine.connect() as connection:
            has_versions = await connection.run_sync(
                lambda sync: inspect(sync).has_table("alembic_version")
            )
            current = (
                (await connection.execute(text("SELECT version_num FROM alembic_version")))
                .scalars()
                .first()
                if has_versions
                else None
            )
        problem = migrations.schema_problem(current)
        if problem is not None:
            raise SchemaNotReady(problem)

    probes = {"database": database()}
    if runtime.settings.redis_url:
        probes["redis"] = runtime.counters.ping()
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, _CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except SchemaNotReady as error:
            checks[name] = f"failed: {error}"
        except Exception as error:  # any failure means not ready; say which and why
            checks[name] = f"failed: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
