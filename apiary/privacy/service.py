"""Data subject rights: export a person's or a tenant's data, erase a person, delete a tenant.

An export is a zip archive: `manifest.json`, one JSON Lines file per table (`tables/`), the
conversation memory read through the memory store, and the original uploaded documents
(`documents/<id>/<filename>`) read through the knowledge repository. It is spooled to a
temporary file as it is written (memory holds one batch of rows and one document at a
time), then streamed to the caller.

Erasure keeps the person's row with nothing that identifies them (email, name, password,
OIDC subject gone; the account disabled) and deletes their sign-ins, memberships and
invitations; keys they created are revoked. Everything else that names them (the audit log,
the ledger, executions they started) names only their id, which now resolves to an
anonymous account: the audit chain is never rewritten and still verifies.

Deleting a tenant deletes every row of every tenant-owned table (walking the schema), its
points in the vector store, its cache entries, counters, memory and other keys in Redis;
members who belonged to no other tenant are erased. Its audit entries stay for the
retention period: they hold ids, not names. The database work is done (not yet committed)
before the stores are swept, so a failure anywhere rolls the rows back and the whole
deletion can simply be run again.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol
from zipfile import ZIP_DEFLATED, ZipFile

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.agents.models import Agent
from apiary.api_keys.models import ApiKey
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.key_cache import keys_changed
from apiary.auth.models import AuthSession
from apiary.authz.permissions import Permission, Role
from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.errors import Conflict, Forbidden, NotFound
from apiary.gateway.cache import ResponseCache
from apiary.knowledge.models import DOCUMENT_CONTENT
from apiary.knowledge.repository import knowledge_repository
from apiary.knowledge.vectors import VectorStore
from apiary.kv import CounterStore
from apiary.limits.enforcer import LimitEnforcer
from apiary.memory.store import MemoryStore
from apiary.privacy.repository import ERASED_DOMAIN, TableRows, exported_columns
from apiary.privacy.repository import privacy_repository as repository
from apiary.privacy.schemas import ErasureReport, TenantDeletionReport
from apiary.tenants.models import Tenant
from apiary.users.models import Membership, User
from apiary.users.repository import membership_repository

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from apiary.crypto.keyring import Sealer
    from apiary.gateway.semantic_cache import SemanticCache

SPOOL_BYTES = 8 * 1024 * 1024  # past this the archive being written moves to disk
CHUNK_BYTES = 64 * 1024
FORMAT_VERSION = 1


class PrivacyDeps(Protocol):
    """What exporting and deleting reach besides the database: every store of tenant data."""

    memory: MemoryStore
    vectors: VectorStore
    cache: ResponseCache
    semantic_cache: SemanticCache | None
    counters: CounterStore
    limits: LimitEnforcer
    redis: Redis | None

    @property
    def encryption(self) -> Sealer: ...  # uploaded documents are stored encrypted


@dataclass
class Archive:
    """A finished archive in a temporary file (in memory while small), read from its start."""

    file: IO[bytes]
    filename: str

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.file.read(CHUNK_BYTES):
                yield chunk
        finally:
            self.file.close()

    def close(self) -> None:
        self.file.close()


class _Writer:
    """A zip being written to a spooled temporary file, one member at a time."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.zip = ZipFile(self.file, "w", compression=ZIP_DEFLATED, allowZip64=True)
        self.counts: dict[str, int] = {}

    def json(self, name: str, value: Any) -> None:
        self.zip.writestr(name, orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2))

    async def lines(self, name: str, rows: AsyncIterator[dict[str, Any]]) -> None:
        count = 0
        with self.zip.open(name, "w", force_zip64=True) as out:
            async for row in rows:
                out.write(orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE))
                count += 1
        self.counts[name] = self.counts.get(name, 0) + count

    async def document(self, name: str, content: bytes) -> None:
        # Compressing a large upload is CPU work: off the event loop.
        await asyncio.to_thread(self.zip.writestr, name, content)
        self.counts[name] = 1

    def finish(self, filename: str, manifest: dict[str, Any]) -> Archive:
        self.json("manifest.json", {**manifest, "files": self.counts})
        self.zip.close()
        self.file.seek(0)
        return Archive(self.file, filename)

    def abandon(self) -> None:
        self.zip.close()
        self.file.close()


async def _concat(session: AsyncSession, tables: list[TableRows]) -> AsyncIterator[dict[str, Any]]:
    for table in tables:
        async for row in repository.rows(session, table):
            yield row


async def _iterate(rows: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for row in rows:
        yield row


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def _safe_name(filename: str) -> str:
    """An uploaded file's name as a zip member: no directories, no `..`, nothing odd."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    return cleaned or "document"


def _is_erased(user: User) -> bool:
    return user.email.endswith(f"@{ERASED_DOMAIN}")


def _profile(user: User) -> dict[str, Any]:
    return {column.name: getattr(user, column.key) for column in exported_columns(User)}


class PrivacyService:
    # -- export --------------------------------------------------------------------------
    async def export_tenant(
        self, session: AsyncSession, auth: AuthContext, tenant_id: uuid.UUID, deps: PrivacyDeps
    ) -> Archive:
        tenant = await self._tenant_in_reach(session, auth, tenant_id)
        scope = TenantScope(tenant.id)
        writer = _Writer()
        try:
            writer.json("tenant.json", {c.name: getattr(tenant, c.key) for c in Tenant.__table__.c})
            members = [
                _profile(user)
                for user_id in await repository.member_ids(session, scope)
                if (user := await repository.user(session, user_id)) is not None
            ]
            await writer.lines("members.jsonl", _iterate(members))
            for table in repository.tenant_tables(scope):
                await writer.lines(f"tables/{table.table}.jsonl", repository.rows(session, table))
            await self._write_memory(session, [scope], deps, writer, user_id=None)
            await self._write_documents(session, scope, deps, writer, created_by=None)
            await audit_service.record(
                session,
                action="tenant.exported",
                actor=auth.actor,
                tenant_id=tenant.id,
                target_type="tenant",
                target_id=tenant.id,
                details={"files": len(writer.counts)},
            )
            return writer.finish(
                f"apiary-tenant-{tenant.id}.zip",
                {
                    "format": FORMAT_VERSION,
                    "kind": "tenant",
                    "tenant_id": str(tenant.id),
                    "exported_at": utcnow().isoformat(timespec="seconds"),
                },
            )
        except BaseException:
            writer.abandon()
            raise

    async def export_user(
        self, session: AsyncSession, auth: AuthContext, user_id: uuid.UUID, deps: PrivacyDeps
    ) -> Archive:
        user, tenants, whole = await self._user_in_reach(session, auth, user_id)
        writer = _Writer()
        try:
            writer.json("user.json", _profile(user))
            writer.json(
                "memberships.json",
                [
                    {"tenant_id": m.tenant_id, "role": m.role, "since": m.created_at}
                    for m in await repository.memberships(session, user.id)
                    if m.tenant_id in tenants
                ],
            )
            # Their sign-ins: all of them for themselves and the platform, only those into
            # this tenant for a tenant admin.
            sessions = repository.own_sessions(user.id, None if whole else tenants)
            await writer.lines(f"tables/{sessions.table}.jsonl", repository.rows(session, sessions))
            by_table: dict[str, list[TableRows]] = {}
            for tenant_id in tenants:
                for table in repository.user_tables(TenantScope(tenant_id), user.id):
                    if table.table != AuthSession.__tablename__:  # the sign-ins, above
                        by_table.setdefault(table.table, []).append(table)
            for name, tables in by_table.items():
                await writer.lines(f"tables/{name}.jsonl", _concat(session, tables))
            scopes = [TenantScope(tenant_id) for tenant_id in tenants]
            await self._write_memory(session, scopes, deps, writer, user_id=user.id)
            for scope in scopes:
                await self._write_documents(session, scope, deps, writer, created_by=user.id)
            await audit_service.record_by(
                session,
                auth,
                "user.exported",
                target_type="user",
                target_id=user.id,
                details={"files": len(writer.counts), "tenants": len(tenants)},
            )
            return writer.finish(
                f"apiary-user-{user.id}.zip",
                {
                    "format": FORMAT_VERSION,
                    "kind": "user",
                    "user_id": str(user.id),
                    "tenants": [str(t) for t in tenants],
                    "exported_at": utcnow().isoformat(timespec="seconds"),
                },
            )
        except BaseException:
            writer.abandon()
            raise

    async def _write_memory(
        self,
        session: AsyncSession,
        scopes: list[TenantScope],
        deps: PrivacyDeps,
        writer: _Writer,
        *,
        user_id: uuid.UUID | None,
    ) -> None:
        """Conversation memory, read through the store (never its tables' columns): whole
        threads for a tenant, a person's own turns for a person."""

        async def threads() -> AsyncIterator[dict[str, Any]]:
            for scope in scopes:
                async for thread in _threads_of(scope):
                    yield thread

        async def _threads_of(scope: TenantScope) -> AsyncIterator[dict[str, Any]]:
            for agent_id, thread_id, executions in await repository.threads(
                session, scope, user_id=user_id
            ):
                thread = await deps.memory.thread(scope, agent_id=agent_id, thread_id=thread_id)
                turns = [t for t in thread.turns if user_id is None or t.execution_id in executions]
                if not turns and (thread.summary is None or user_id is not None):
                    continue
                yield {
                    "tenant_id": scope.tenant_id,
                    "agent_id": agent_id,
                    "thread_id": thread_id,
                    # A summary mixes everyone's turns: a tenant's, not one person's.
                    "summary": thread.summary.text if thread.summary and user_id is None else None,
                    "turns": [
                        {
                            "execution_id": t.execution_id,
                            "task": t.task,
                            "answer": t.answer,
                            "created_at": t.created_at,
                        }
                        for t in turns
                    ],
                }

        await writer.lines("memory/threads.jsonl", threads())

    async def _write_documents(
        self,
        session: AsyncSession,
        scope: TenantScope,
        deps: PrivacyDeps,
        writer: _Writer,
        *,
        created_by: uuid.UUID | None,
    ) -> None:
        for document_id in await repository.documents(session, scope, created_by=created_by):
            document = await knowledge_repository.get_document(
                session, scope, document_id, with_content=True
            )
            if document is None:  # deleted while the archive was written
                continue
            name = f"documents/{document.id}/{_safe_name(document.filename)}"
            content = await deps.encryption.decrypt(
                scope.tenant_id, document.content, purpose=DOCUMENT_CONTENT
            )
            await writer.document(name, content)
            session.expunge(document)  # one document's bytes in memory at a time

    # -- erasure -------------------------------------------------------------------------
    async def erase_user(
        self,
        session: AsyncSession,
        auth: AuthContext,
        user_id: uuid.UUID,
        deps: PrivacyDeps,
    ) -> ErasureReport:
        user, _, _ = await self._user_in_reach(session, auth, user_id, erasing=True)
        kept = await repository.audit_mentions(session, user.id)
        if _is_erased(user):
            return ErasureReport(
                user_id=user.id,
                already_erased=True,
                memberships_removed=0,
                invitations_removed=0,
                sessions_ended=0,
                refresh_tokens_removed=0,
                api_keys_revoked=0,
                audit_entries_kept=kept,
            )
        memberships = await repository.memberships(session, user.id)
        await self._keep_tenants_administered(session, user, memberships)
        report = await self._erase(session, user, memberships, deps)
        await audit_service.record_by(
            session,
            auth,
            "user.erased",
            target_type="user",
            target_id=user_id,
            details=report.model_dump(mode="json", exclude={"user_id", "already_erased"}),
        )
        return report.model_copy(update={"audit_entries_kept": kept + 1})

    async def _erase(
        self, session: AsyncSession, user: User, memberships: list[Membership], deps: PrivacyDeps
    ) -> ErasureReport:
        now, user_id = utcnow(), user.id
        # The sign-in throttle's counters name the address (`login:known:<email>:...`).
        await deps.counters.forget_containing([user.email])
        keys = members = 0
        for membership in memberships:
            scope = TenantScope(membership.tenant_id)
            keys += await repository.revoke_keys_of(session, scope, user.id, now)
            members += await repository.leave(session, scope, user.id)
        invitations = 0
        for tenant_id in await repository.invitations_received(session, user.id):
            invitations += await repository.leave(session, TenantScope(tenant_id), user.id)
        sessions, tokens = await repository.end_sessions(session, user.id)
        await repository.anonymise(session, user.id)
        await session.flush()
        session.expire(user)  # reloaded, anonymous, when next read
        keys_changed(session)  # their keys stop on this replica now, not in seconds
        return ErasureReport(
            user_id=user_id,
            already_erased=False,
            memberships_removed=members,
            invitations_removed=invitations,
            sessions_ended=sessions,
            refresh_tokens_removed=tokens,
            api_keys_revoked=keys,
            audit_entries_kept=0,
        )

    async def _keep_tenants_administered(
        self, session: AsyncSession, user: User, memberships: list[Membership]
    ) -> None:
        for membership in memberships:
            if membership.role != Role.TENANT_ADMIN:
                continue
            scope = TenantScope(membership.tenant_id)
            # Under the tenant's lock, as a demotion is: two admins erasing themselves at
            # once cannot both pass.
            await membership_repository.lock_tenant(session, scope)
            if await repository.admins(session, scope) != [user.id]:
                continue
            tenant = await repository.tenant(session, membership.tenant_id)
            name = tenant.name if tenant else str(membership.tenant_id)
            if await repository.member_count(session, scope) > 1:
                raise Conflict(
                    f"user {user.id} is the last tenant_admin of tenant {name!r}: make another "
                    "member tenant_admin first (PATCH /api/v1/members/{id})"
                )
            raise Conflict(
                f"user {user.id} is the only member of tenant {name!r}: the platform's super "
                f"admin deletes the tenant instead (DELETE /api/v1/privacy/tenants/"
                f"{membership.tenant_id}), which erases its sole members"
            )

    # -- tenant deletion -----------------------------------------------------------------
    async def delete_tenant(
        self, session: AsyncSession, auth: AuthContext, tenant_id: uuid.UUID, deps: PrivacyDeps
    ) -> TenantDeletionReport:
        tenant = await repository.tenant(session, tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id} not found (already deleted, or never was)")
        if auth.tenant_id == tenant.id:
            raise Conflict(
                f"you are signed in to tenant {tenant.name!r}: sign in without a tenant to "
                "delete it"
            )
        scope = TenantScope(tenant.id)
        running = await repository.running_executions(session, scope)
        if running:
            raise Conflict(
                f"tenant {tenant.name!r} has {running} execution(s) still running: cancel "
                "them (POST /api/v1/executions/{id}/cancel) or wait for them to end"
            )
        name = tenant.name
        agents = await repository.ids(session, scope, Agent)
        keys = [str(key) for key in await repository.ids(session, scope, ApiKey)]
        threads = await repository.threads(session, scope)
        sole: list[tuple[User, list[Membership]]] = []
        for user_id in await repository.member_ids(session, scope):
            memberships = await repository.memberships(session, user_id)
            user = await repository.user(session, user_id)
            if user is not None and all(m.tenant_id == tenant.id for m in memberships):
                sole.append((user, memberships))
        tables = await repository.delete_tenant_rows(session, scope)
        for user, memberships in sole:  # their sign-ins elsewhere (none tenant), their names
            await self._erase(session, user, memberships, deps)
        tables[Tenant.__tablename__] = await repository.delete_tenant(session, tenant.id)
        session.expunge(tenant)
        kept = await repository.audit_entries(session, scope)
        await session.flush()

        vectors = await deps.vectors.count(scope)
        await deps.vectors.delete_tenant(scope)
        for agent_id in agents:
            await deps.memory.forget_agent(scope, agent_id)
        cache = await deps.cache.forget_tenant(str(tenant.id))
        if deps.semantic_cache is not None:
            deps.semantic_cache.forget_tenant(str(tenant.id))
        counters = await deps.counters.forget_containing([str(tenant.id), *keys])
        other = await _sweep_redis(deps.redis, [str(tenant.id), *keys])
        deps.limits.forget(tenant.id)
        keys_changed(session)

        report = TenantDeletionReport(
            tenant_id=tenant_id,
            name=name,
            tables={table: count for table, count in sorted(tables.items()) if count},
            vectors=vectors,
            memory_threads=len(threads),
            cache_entries=cache,
            counters=counters,
            other_keys=other,
            users_erased=len(sole),
            audit_entries_kept=kept + 1,
        )
        await audit_service.record(
            session,
            action="tenant.deleted",
            actor=auth.actor,
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            details=report.model_dump(mode="json", exclude={"tenant_id", "audit_entries_kept"}),
        )
        return report

    # -- who may ask ---------------------------------------------------------------------
    async def _tenant_in_reach(
        self, session: AsyncSession, auth: AuthContext, tenant_id: uuid.UUID
    ) -> Tenant:
        tenant = await repository.tenant(session, tenant_id)
        # Another tenant is as absent as one that never was.
        if tenant is None or not (auth.is_super_admin or auth.tenant_id == tenant.id):
            raise NotFound(f"tenant {tenant_id} not found")
        return tenant

    async def _user_in_reach(
        self,
        session: AsyncSession,
        auth: AuthContext,
        user_id: uuid.UUID,
        *,
        erasing: bool = False,
    ) -> tuple[User, list[uuid.UUID], bool]:
        """The person, the tenants whose data about them this caller may act on (all of
        theirs for themselves and the super admin, the caller's own for a tenant admin),
        and whether the caller reaches all of it (their data outside any tenant too)."""
        if auth.via_key:
            raise Forbidden(
                "exporting or erasing a person's data is for a person signed in, not an API key"
            )
        user = await repository.user(session, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        if erasing and user.is_super_admin:
            raise Forbidden(
                "the platform's super admin account cannot be erased: it administers the "
                "platform (hand that to another account first)"
            )
        tenants = [m.tenant_id for m in await repository.memberships(session, user.id)]
        if auth.is_super_admin or (auth.user_id is not None and auth.user_id == user.id):
            return user, tenants, True
        if auth.can(Permission.PRIVACY_MANAGE) and auth.tenant_id in tenants:
            if erasing and len(tenants) > 1:
                raise Conflict(
                    f"user {user_id} is also a member of other tenants: remove them from "
                    "this one (DELETE /api/v1/members/{id}); only they or the platform's "
                    "super admin can erase the account"
                )
            return user, [auth.tenant_id] if auth.tenant_id else [], False
        # Someone outside the caller's reach is as absent as someone who never was.
        raise NotFound(f"user {user_id} not found")


async def _sweep_redis(redis: Redis | None, needles: list[str]) -> int:
    """Every other key that names the tenant or one of its keys (swarm slots, memory
    threads of agents already gone, anything added later that keys by tenant): one pass
    over the keyspace, matched here."""
    if redis is None:
        return 0
    encoded = [needle.encode() for needle in needles]
    removed = 0
    async for name in redis.scan_iter(count=1000):
        raw = name if isinstance(name, bytes) else str(name).encode()
        if any(needle in raw for needle in encoded):
            removed += int(await redis.unlink(name))
    return removed


privacy_service = PrivacyService()
