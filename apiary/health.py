"""Liveness and readiness: `/healthz` says the process answers, `/readyz` that its
dependencies (the database; Redis when configured) answer too."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from apiary.runtime import RuntimeDep

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database (and Redis, when configured) answer")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}

    async def database() -> None:
        async with runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    probes = {"database": database()}
    if runtime.settings.redis_url:
        probes["redis"] = runtime.counters.ping()
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, _CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as error:  # any failure means not ready; say which and why
            checks[name] = f"failed: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
