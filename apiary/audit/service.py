"""Appending to the audit log and verifying its hash chain.

Each entry's hash is SHA-256 over its canonical JSON and the previous entry's hash, so any
edit, insertion or deletion in the middle breaks every later link. Appends take the chain
lock for the rest of the transaction: an advisory lock on PostgreSQL, a process lock on
SQLite (embedded mode is one process), so two transactions never chain to the same parent.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from apiary.audit.models import AuditEntry
from apiary.auth.context import Actor
from apiary.authz.scope import TenantScope
from apiary.db import session_scope, utcnow
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams

GENESIS = "0" * 64
_ADVISORY_KEY = 0x41504941  # "APIA"
_sqlite_chain_lock = asyncio.Lock()


def entry_hash(
    *,
    prev_hash: str,
    created_at: datetime,
    tenant_id: uuid.UUID | None,
    actor_user_id: uuid.UUID | None,
    actor_api_key_id: uuid.UUID | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    ip: str | None,
    details: dict[str, Any],
) -> str:
    canonical = orjson.dumps(
        {
            "prev": prev_hash,
            "at": created_at.isoformat(timespec="microseconds"),
            "tenant": str(tenant_id) if tenant_id else None,
            "user": str(actor_user_id) if actor_user_id else None,
            "key": str(actor_api_key_id) if actor_api_key_id else None,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "ip": ip,
            "details": details,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def _hash_of(entry: AuditEntry) -> str:
    return entry_hash(
        prev_hash=entry.prev_hash,
        created_at=entry.created_at,
        tenant_id=entry.tenant_id,
        actor_user_id=entry.actor_user_id,
        actor_api_key_id=entry.actor_api_key_id,
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        ip=entry.ip,
        details=entry.details,
    )


async def _lock_chain(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
        return
    if session.info.get("audit_chain_locked"):
        return
    await _sqlite_chain_lock.acquire()
    session.info["audit_chain_locked"] = True
    if not session.info.get("audit_release_listener"):
        session.info["audit_release_listener"] = True
        event.listen(session.sync_session, "after_transaction_end", _release_chain_lock)


def _release_chain_lock(sync_session: Session, transaction: SessionTransaction) -> None:
    # Only the outermost transaction's end (commit or rollback) releases the lock.
    if transaction.parent is None and sync_session.info.pop("audit_chain_locked", False):
        _sqlite_chain_lock.release()


class AuditService:
    async def record(
        self,
        session: AsyncSession,
        *,
        action: str,
        actor: Actor,
        tenant_id: uuid.UUID | None,
        target_type: str | None = None,
        target_id: uuid.UUID | str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append an entry in the caller's transaction: it lands only if the action does."""
        await _lock_chain(session)
        last = await session.scalar(
            select(AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        )
        entry = AuditEntry(
            tenant_id=tenant_id,
            actor_user_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            action=action,
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            ip=actor.ip,
            details=details or {},
            created_at=utcnow(),
            prev_hash=last or GENESIS,
        )
        entry.hash = _hash_of(entry)
        session.add(entry)
        await session.flush()
        return entry

    async def record_alone(
        self,
        factory: async_sessionmaker[AsyncSession],
        *,
        action: str,
        actor: Actor,
        tenant_id: uuid.UUID | None,
        target_type: str | None = None,
        target_id: uuid.UUID | str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append in a transaction of its own, for failures whose request is rolled back."""
        async with session_scope(factory) as session:
            await self.record(
                session,
                action=action,
                actor=actor,
                tenant_id=tenant_id,
                target_type=target_type,
                target_id=target_id,
                details=details,
            )

    async def list(
        self, session: AsyncSession, scope: TenantScope, page: PageParams, *, action: str | None
    ) -> tuple[Sequence[AuditEntry], int]:
        statement = scope.select(AuditEntry)
        if action:
            statement = statement.where(AuditEntry.action == action)
        return await paginate(session, statement, page, AuditEntry.seq.desc())

    async def verify(self, session: AsyncSession, *, batch: int = 1000) -> ChainReport:
        """Walk the whole chain in order; report the first entry whose link is broken."""
        expected_prev = GENESIS
        checked = 0
        after = 0
        while True:
            rows = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.seq > after)
                    .order_by(AuditEntry.seq)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return ChainReport(ok=True, entries=checked)
            for entry in rows:
                if entry.prev_hash != expected_prev:
                    return ChainReport(
                        ok=False,
                        entries=checked,
                        broken_seq=entry.seq,
                        reason="entry does not link to the one before it (inserted or removed)",
                    )
                if _hash_of(entry) != entry.hash:
                    return ChainReport(
                        ok=False,
                        entries=checked,
                        broken_seq=entry.seq,
                        reason="entry contents do not match its hash (modified)",
                    )
                expected_prev = entry.hash
                checked += 1
                after = entry.seq


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    broken_seq: int | None = None
    reason: str | None = None


audit_service = AuditService()
