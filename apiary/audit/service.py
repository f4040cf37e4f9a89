"""Appending to the audit log and verifying its hash chain.

Each entry's hash is SHA-256 over its canonical JSON and the previous entry's hash, so any
edit, insertion or deletion in the middle breaks every later link. An append first updates
the one-row chain head, which holds its write lock until the transaction ends (a row lock
on PostgreSQL, the database write lock on SQLite, across processes too), so two
transactions never chain to the same parent. The head also records the newest hash and
the entry count, so `verify` notices entries cut from the end.

Past their retention, entries are archived to JSON Lines and removed (`prune`); the head
then records how many were and the last one's hash, where the chain left in the table
starts, so the table still verifies on its own and each archive chains to the next.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.audit.models import GENESIS as GENESIS  # re-exported: callers import it here
from apiary.audit.models import AuditChainHead, AuditEntry
from apiary.auth.context import Actor, AuthContext
from apiary.authz.scope import TenantScope
from apiary.billing.entitlements import Feature, require_feature
from apiary.db import utcnow
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams


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


HEAD_ID = 1
# On PostgreSQL the table's trigger (migration 0018) refuses to delete entries younger
# than this, whatever the configured retention: seven years, the plan's.
PRUNE_FLOOR_DAYS = 2557


async def _claim_head(session: AsyncSession) -> str:
    """Lock the chain head for the rest of the transaction and return the newest hash."""
    statement = (
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .values(entries=AuditChainHead.entries + 1)
        .returning(AuditChainHead.head_hash)
    )
    head = (await session.execute(statement)).scalar_one_or_none()
    if head is None:  # an empty database (the migration seeds the row; tests truncate it)
        session.add(AuditChainHead(id=HEAD_ID, head_hash=GENESIS, entries=1))
        await session.flush()
        return GENESIS
    return head


_EXPORTED = (
    "seq",
    "created_at",
    "action",
    "actor_user_id",
    "actor_api_key_id",
    "target_type",
    "target_id",
    "ip",
    "details",
    "hash",
)


class AuditService:
    async def record_by(
        self,
        session: AsyncSession,
        auth: AuthContext,
        action: str,
        *,
        target_type: str,
        target_id: uuid.UUID | str,
        details: dict[str, Any],
    ) -> AuditEntry:
        """`record` for an action a caller took in its own tenant (who and where from `auth`)."""
        return await self.record(
            session,
            action=action,
            actor=auth.actor,
            tenant_id=auth.tenant_id,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )

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
        previous = await _claim_head(session)
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
            prev_hash=previous,
        )
        entry.hash = _hash_of(entry)
        session.add(entry)
        await session.execute(
            update(AuditChainHead).where(AuditChainHead.id == HEAD_ID).values(head_hash=entry.hash)
        )
        await session.flush()
        return entry

    async def list(
        self, session: AsyncSession, scope: TenantScope, page: PageParams, *, action: str | None
    ) -> tuple[Sequence[AuditEntry], int]:
        statement = scope.select(AuditEntry)
        if action:
            statement = statement.where(AuditEntry.action == action)
        return await paginate(session, statement, page, AuditEntry.seq.desc())

    async def export_csv(self, session: AsyncSession, scope: TenantScope) -> str:
        """Every entry of the tenant as CSV, oldest first: a feature of the tenant's plan."""
        await require_feature(session, scope, Feature.AUDIT_EXPORT)
        rows = await session.scalars(scope.select(AuditEntry).order_by(AuditEntry.seq))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_EXPORTED)
        for row in rows:
            values = [getattr(row, name) for name in _EXPORTED]
            writer.writerow(
                [
                    orjson.dumps(v).decode() if isinstance(v, dict) else "" if v is None else v
                    for v in values
                ]
            )
        return out.getvalue()

    async def verify(self, session: AsyncSession, *, batch: int = 1000) -> ChainReport:
        """Walk the whole chain in order; report the first entry whose link is broken. It
        starts where the last prune ended (the archives hold the rest)."""
        head = await session.get(AuditChainHead, HEAD_ID)
        expected_prev = head.pruned_hash if head else GENESIS
        checked = 0
        async with aclosing(_in_order(session, batch)) as entries:
            async for entry in entries:
                if (broken := _broken(entry, expected_prev)) is not None:
                    return ChainReport(
                        ok=False, entries=checked, broken_seq=entry.seq, reason=broken
                    )
                expected_prev = entry.hash
                checked += 1
        return await self._check_head(session, expected_prev, checked)

    async def archive(
        self, session: AsyncSession, out: IO[bytes], *, before: datetime | None = None
    ) -> int:
        """Write the log (entries created before `before`, if given) as JSON Lines, oldest
        first, each entry with its `prev_hash` and `hash`, so the archive verifies on its own
        (`verify_archive`) long after its rows are gone. Returns the entries written."""
        written, after = 0, 0
        while True:
            query = select(AuditEntry).where(AuditEntry.seq > after)
            if before is not None:
                query = query.where(AuditEntry.created_at < before)
            rows = (await session.scalars(query.order_by(AuditEntry.seq).limit(1000))).all()
            if not rows:
                return written
            for entry in rows:
                out.write(orjson.dumps(_archived(entry), option=orjson.OPT_APPEND_NEWLINE))
                written += 1
                after = entry.seq

    async def anchor(self, session: AsyncSession) -> dict[str, Any]:
        """The chain's head now, to keep somewhere the database's owner cannot rewrite (a
        file on other storage, a ticket, a log shipper): `check_anchors` later proves the
        log still holds what it held then, even against a rewrite that re-hashed it all."""
        head = await session.get(AuditChainHead, HEAD_ID)
        return {
            "at": utcnow().isoformat(timespec="seconds"),
            "entries": head.entries if head else 0,
            "hash": head.head_hash if head else GENESIS,
        }

    async def check_anchors(
        self, session: AsyncSession, anchors: Iterable[dict[str, Any]]
    ) -> ChainReport:
        """Whether the entry each anchor names (the Nth, oldest first) still has the hash
        the anchor recorded; the first that does not is reported."""
        head = await session.get(AuditChainHead, HEAD_ID)
        pruned, pruned_hash = (head.pruned_entries, head.pruned_hash) if head else (0, GENESIS)
        checked = in_archives = 0
        for anchor in anchors:
            entries, expected = int(anchor["entries"]), str(anchor["hash"])
            if entries == 0:
                checked += 1
                continue
            if entries == pruned:  # the last entry pruned: the head kept its hash
                if expected != pruned_hash:
                    return ChainReport(
                        ok=False,
                        entries=checked,
                        reason=f"entry {entries}, the last pruned, did not have the hash "
                        f"anchored at {anchor.get('at')}: the log was rewritten",
                    )
                checked += 1
                continue
            if entries <= pruned:  # its entry is in an archive now
                in_archives += 1
                continue
            found = (
                await session.execute(
                    select(AuditEntry.seq, AuditEntry.hash)
                    .order_by(AuditEntry.seq)
                    .offset(entries - pruned - 1)
                    .limit(1)
                )
            ).first()
            if found is None:
                return ChainReport(
                    ok=False,
                    entries=checked,
                    reason=f"the log has fewer than the {entries} entries anchored at "
                    f"{anchor.get('at')}: entries were removed",
                )
            if found.hash != expected:
                return ChainReport(
                    ok=False,
                    entries=checked,
                    broken_seq=found.seq,
                    reason=f"entry {entries} no longer has the hash anchored at "
                    f"{anchor.get('at')}: the log was rewritten",
                )
            checked += 1
        return ChainReport(ok=True, entries=checked, anchors_in_archives=in_archives)

    async def _check_head(self, session: AsyncSession, last_hash: str, count: int) -> ChainReport:
        head = await session.get(AuditChainHead, HEAD_ID)
        if head is None:
            ok = count == 0
            return ChainReport(ok=ok, entries=count, reason=None if ok else "chain head missing")
        present = head.entries - head.pruned_entries
        if head.head_hash != last_hash or present != count:
            return ChainReport(
                ok=False,
                entries=count,
                broken_seq=None,
                reason=f"the log ends before its recorded head ({present} entries "
                f"recorded, {count} present): entries were removed from the end",
                archived=head.pruned_entries,
            )
        return ChainReport(ok=True, entries=count, archived=head.pruned_entries)

    async def prune(
        self, session: AsyncSession, out: IO[bytes], *, before: datetime
    ) -> PruneReport:
        """Archive the entries created before `before` to `out` (as `archive` writes them)
        and remove them from the table, in the caller's transaction: commit it only once
        `out` is safely written. Only the chain's oldest run is pruned, each entry checked
        against its hash and its link first, so a tampered entry is reported, not archived
        and lost. The head keeps the count and the last hash, where the table's chain now
        starts."""
        # A no-op update locks the head like an append does: no entry is chained while the
        # oldest are being removed.
        claimed = (
            await session.execute(
                update(AuditChainHead)
                .where(AuditChainHead.id == HEAD_ID)
                .values(entries=AuditChainHead.entries)
                .returning(AuditChainHead.pruned_entries, AuditChainHead.pruned_hash)
            )
        ).first()
        if claimed is None:
            return PruneReport(ok=True, archived=0, before=before)
        pruned, expected_prev = claimed
        written, last_seq = 0, None
        async with aclosing(_in_order(session)) as entries:
            async for entry in entries:
                if entry.created_at >= before:  # the first entry still kept ends the run
                    break
                if (broken := _broken(entry, expected_prev)) is not None:
                    return PruneReport(
                        ok=False, archived=0, before=before, broken_seq=entry.seq, reason=broken
                    )
                out.write(orjson.dumps(_archived(entry), option=orjson.OPT_APPEND_NEWLINE))
                expected_prev, last_seq, written = entry.hash, entry.seq, written + 1
        if last_seq is None:
            return PruneReport(ok=True, archived=0, before=before)
        await session.execute(delete(AuditEntry).where(AuditEntry.seq <= last_seq))
        await session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(pruned_entries=pruned + written, pruned_hash=expected_prev)
        )
        return PruneReport(ok=True, archived=written, before=before, last_hash=expected_prev)


async def _in_order(session: AsyncSession, batch: int = 1000) -> AsyncGenerator[AuditEntry]:
    """Every entry in the table, oldest first, read a batch at a time."""
    after = 0
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
        rows = (await session.scalars(query.limit(batch))).all()
        if not rows:
            return
        for entry in rows:
            yield entry
        after = rows[-1].seq


def _broken(entry: AuditEntry, expected_prev: str) -> str | None:
    """Why `entry` breaks the chain, if it does, given the hash it should link to."""
    if entry.prev_hash != expected_prev:
        return "entry does not link to the one before it (inserted or removed)"
    if _hash_of(entry) != entry.hash:
        return "entry contents do not match its hash (modified)"
    return None


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    broken_seq: int | None = None
    reason: str | None = None
    # An archive's ends: what its first entry links to (64 zeros for the log's start) and
    # its last hash, to match against the archive before it and the one after (or the head).
    first_prev_hash: str | None = None
    last_hash: str | None = None
    # Entries pruned from the table into archives (not checked here), and anchors naming
    # one of them (to check against the archives instead).
    archived: int = 0
    anchors_in_archives: int = 0


@dataclass(frozen=True)
class PruneReport:
    ok: bool
    archived: int
    before: datetime
    last_hash: str | None = None  # the last archived entry's, where the table now starts
    broken_seq: int | None = None
    reason: str | None = None


_ARCHIVED = (
    "seq",
    "created_at",
    "tenant_id",
    "actor_user_id",
    "actor_api_key_id",
    "action",
    "target_type",
    "target_id",
    "ip",
    "details",
    "prev_hash",
    "hash",
)


def _archived(entry: AuditEntry) -> dict[str, Any]:
    line = {name: getattr(entry, name) for name in _ARCHIVED}
    line["created_at"] = entry.created_at.isoformat(timespec="microseconds")
    # asyncpg's UUID is not the uuid.UUID orjson writes natively.
    for name in ("tenant_id", "actor_user_id", "actor_api_key_id"):
        if line[name] is not None:
            line[name] = str(line[name])
    return line


def _optional_uuid(value: object) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def verify_archive(lines: Iterable[bytes]) -> ChainReport:
    """Check an archive written by `AuditService.archive` with nothing but its own lines:
    every entry's hash from its contents, and every link to the entry before it."""
    checked, first_prev, expected_prev = 0, None, None
    seq = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            seq = int(line["seq"])
            computed = entry_hash(
                prev_hash=line["prev_hash"],
                created_at=datetime.fromisoformat(line["created_at"]),
                tenant_id=_optional_uuid(line["tenant_id"]),
                actor_user_id=_optional_uuid(line["actor_user_id"]),
                actor_api_key_id=_optional_uuid(line["actor_api_key_id"]),
                action=line["action"],
                target_type=line["target_type"],
                target_id=line["target_id"],
                ip=line["ip"],
                details=line["details"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return ChainReport(
                ok=False, entries=checked, reason=f"line {number} is not an archived entry: {error}"
            )
        if expected_prev is not None and line["prev_hash"] != expected_prev:
            return ChainReport(
                ok=False,
                entries=checked,
                broken_seq=seq,
                reason="entry does not link to the one before it (inserted or removed)",
            )
        if computed != line["hash"]:
            return ChainReport(
                ok=False,
                entries=checked,
                broken_seq=seq,
                reason="entry contents do not match its hash (modified)",
            )
        first_prev = line["prev_hash"] if first_prev is None else first_prev
        expected_prev = line["hash"]
        checked += 1
    return ChainReport(
        ok=True, entries=checked, first_prev_hash=first_prev, last_hash=expected_prev
    )


audit_service = AuditService()
