"""The audit chain's head, anchored off the database on a schedule.

An anchor (time, entry count, head hash) kept where the database's owner cannot rewrite
it is what proves, later, that the log was not rewritten wholesale (`apiary audit verify
--anchors`). Each API process posts one to `APIARY_AUDIT__ANCHOR_URL` (a collector, a
ticketing or log-shipping endpoint the operator runs) and/or appends one to
`APIARY_AUDIT__ANCHOR_FILE` (a mount on other storage) every `anchor_interval_s`. Several
replicas anchoring the same head only add duplicate lines, each of which still checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.audit.service import audit_service
from apiary.config import AuditSettings
from apiary.db import session_scope

log = logging.getLogger("apiary.audit")


async def send_anchor(
    anchor: dict[str, Any],
    *,
    url: str | None,
    file: Path | None,
    token: str | None = None,
) -> None:
    """Post `anchor` as JSON to `url` (a 2xx expected) and/or append it to `file`."""
    body = orjson.dumps(anchor)
    if file is not None:
        await asyncio.to_thread(_append, file, body + b"\n")
    if url is not None:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(timeout=10.0) as client:  # once an hour: no pool kept
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()


def _append(file: Path, line: bytes) -> None:
    with file.open("ab") as out:
        out.write(line)


class AnchorSchedule:
    """Anchors the head every `anchor_interval_s` while an API process runs, when the
    settings name a URL or a file; does nothing otherwise."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], settings: AuditSettings) -> None:
        self._factory = factory
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._settings.anchor_url is not None or self._settings.anchor_file is not None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="audit-anchor")

    async def anchor_once(self) -> dict[str, Any]:
        async with session_scope(self._factory) as session:
            anchor = await audit_service.anchor(session)
        token = self._settings.anchor_token
        await send_anchor(
            anchor,
            url=self._settings.anchor_url,
            file=self._settings.anchor_file,
            token=token.get_secret_value() if token else None,
        )
        return anchor

    async def _run(self) -> None:
        while True:
            try:
                anchor = await self.anchor_once()
                log.info("audit chain anchored at %d entries", anchor["entries"])
            except Exception as error:  # the database or the receiver away: next time
                # The URL may carry a credential in its query: only the error's kind is logged.
                log.warning("anchoring the audit chain failed (%s)", type(error).__name__)
            await asyncio.sleep(self._settings.anchor_interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
