"""The queries behind data subject rights, found by walking the schema.

Which tables a tenant owns and which columns name a person are read from the SQLAlchemy
metadata, not listed by hand: a table added later (with a `tenant_id`, or a column that
references `users.id`) is exported, counted and deleted without anyone remembering to add
it here. Tenant-owned rows are read and deleted through the tenant scope only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    LargeBinary,
    Select,
    Table,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.models import ApiKey
from apiary.audit.models import AuditEntry
from apiary.auth.models import AuthSession, RefreshToken
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import Base
from apiary.executions.models import FINISHED, Execution
from apiary.knowledge.models import KnowledgeDocument
from apiary.memory.models import ThreadSummary, ThreadTurn
from apiary.swarm.models import SwarmCheckpoint, SwarmCheckpointWrite
from apiary.tenants.models import Tenant
from apiary.users.models import Invitation, Membership, User

# Columns never exported: credentials and signing secrets, whoever asks.
SECRET_COLUMNS = frozenset(
    {"password_hash", "key_hash", "token_hash", "secret", "previous_secret", "head_hash"}
)
# Columns that name a person without a foreign key (the log and the ledger outlive users).
_PERSON_COLUMNS = frozenset({"user_id", "actor_user_id", "created_by", "invited_by"})
# Text kept encrypted at rest, read only through its store (apiary/memory/store.py): the
# archive takes conversation memory from `MemoryStore`, never from these tables' columns.
_READ_THROUGH_STORE: frozenset[str] = frozenset(
    {ThreadTurn.__tablename__, ThreadSummary.__tablename__}
)
# The log's rows stay whatever else is deleted (see docs/security.md).
_KEPT: frozenset[str] = frozenset({AuditEntry.__tablename__})

ERASED_DOMAIN = "erased.invalid"  # RFC 2606: an address that can never be delivered


def erased_email(user_id: uuid.UUID) -> str:
    return f"erased-{user_id.hex}@{ERASED_DOMAIN}"


def table_of(model: type[Base]) -> Table:
    table: Table = model.__table__  # type: ignore[assignment]
    return table


def _mapped() -> list[type[Base]]:
    by_table: dict[str, type[Base]] = {
        table_of(mapper.class_).name: mapper.class_ for mapper in Base.registry.mappers
    }
    return [by_table[t.name] for t in Base.metadata.sorted_tables if t.name in by_table]


def tenant_models() -> list[type[Base]]:
    """Every mapped class with a `tenant_id`, parents before children."""
    return [model for model in _mapped() if "tenant_id" in table_of(model).c]


def exported_columns(model: type[Base]) -> list[Column[Any]]:
    """A table's columns as an archive shows them: no secrets, no raw bytes (documents go
    into the archive as files, through the knowledge repository)."""
    return [
        column
        for column in table_of(model).c
        if column.name not in SECRET_COLUMNS and not isinstance(column.type, LargeBinary)
    ]


def _person_columns(model: type[Base]) -> list[Column[Any]]:
    columns = []
    for column in table_of(model).c:
        points_at_users = any(fk.column.table.name == "users" for fk in column.foreign_keys)
        if points_at_users or column.name in _PERSON_COLUMNS:
            columns.append(column)
    return columns


@dataclass(frozen=True, slots=True)
class TableRows:
    table: str
    statement: Select[Any]
    columns: list[Column[Any]]


class PrivacyRepository:
    # -- tenants -------------------------------------------------------------------------
    async def tenant(self, session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
        return await session.get(Tenant, tenant_id)

    def tenant_tables(self, scope: TenantScope) -> list[TableRows]:
        """Every tenant-owned table's rows for an archive, through the scope."""
        return [
            TableRows(
                model.__tablename__,
                scope.select(model).order_by(*table_of(model).primary_key.columns),
                exported_columns(model),
            )
            for model in tenant_models()
            if model.__tablename__ not in _READ_THROUGH_STORE
        ]

    def user_tables(self, scope: TenantScope, user_id: uuid.UUID) -> list[TableRows]:
        """The rows of one tenant that name the person (who made, started, was invited...)."""
        tables = []
        for model in tenant_models():
            if model.__tablename__ in _READ_THROUGH_STORE:
                continue
            columns = _person_columns(model)
            if model is AuditEntry:  # also what was done to them, not only by them
                criteria = _mentions(user_id)
            elif columns:
                criteria = [column == user_id for column in columns]
            else:
                continue
            statement = scope.select(model).where(_any(criteria))
            tables.append(
                TableRows(
                    model.__tablename__,
                    statement.order_by(*table_of(model).primary_key.columns),
                    exported_columns(model),
                )
            )
        return tables

    async def rows(
        self, session: AsyncSession, rows: TableRows, *, batch: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """The rows as plain dicts, fetched in batches so a large table never sits whole
        in memory."""
        # Columns, not ORM objects: nothing piles up in the session's identity map.
        statement = rows.statement.with_only_columns(*rows.columns)
        result = await session.stream(statement.execution_options(yield_per=batch))
        names = [column.name for column in rows.columns]
        async for row in result:
            yield dict(zip(names, row, strict=True))

    async def documents(
        self, session: AsyncSession, scope: TenantScope, *, created_by: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        statement = scope.select(KnowledgeDocument).with_only_columns(KnowledgeDocument.id)
        if created_by is not None:
            statement = statement.where(KnowledgeDocument.created_by == created_by)
        return list(await session.scalars(statement.order_by(KnowledgeDocument.id)))

    async def threads(
        self, session: AsyncSession, scope: TenantScope, *, user_id: uuid.UUID | None = None
    ) -> list[tuple[uuid.UUID, str, set[uuid.UUID]]]:
        """The conversation threads the tenant's executions ran in (memory is only ever
        written by them): (agent, thread, the executions in it), optionally only those a
        person started."""
        statement = (
            scope.select(Execution)
            .with_only_columns(Execution.agent_id, Execution.thread_id, Execution.id)
            .where(Execution.thread_id.is_not(None), Execution.agent_id.is_not(None))
        )
        if user_id is not None:
            statement = statement.where(Execution.user_id == user_id)
        found: dict[tuple[uuid.UUID, str], set[uuid.UUID]] = {}
        for agent_id, thread_id, execution_id in await session.execute(statement):
            if agent_id is not None and thread_id is not None:  # (the query's own filter)
                found.setdefault((agent_id, thread_id), set()).add(execution_id)
        return [(agent, thread, ids) for (agent, thread), ids in sorted(found.items())]

    async def running_executions(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = scope.select(Execution).where(
            Execution.state.not_in([state.value for state in FINISHED])
        )
        counted = await session.scalar(select(func.count()).select_from(statement.subquery()))
        return int(counted or 0)

    async def ids(
        self, session: AsyncSession, scope: TenantScope, model: type[Base]
    ) -> list[uuid.UUID]:
        column = table_of(model).c.id
        return list(await session.scalars(scope.select(model).with_only_columns(column)))

    async def delete_tenant_rows(self, session: AsyncSession, scope: TenantScope) -> dict[str, int]:
        """Delete every tenant-owned row (children first) and what hangs off them without
        a tenant id: refresh tokens, swarm checkpoints. Counts per table."""
        removed: dict[str, int] = {}
        executions = [str(i) for i in await self.ids(session, scope, Execution)]
        for checkpoints in (SwarmCheckpointWrite, SwarmCheckpoint):
            table = table_of(checkpoints)
            count = 0
            for chunk in _chunks(executions, 500):
                result = await session.execute(delete(table).where(table.c.thread_id.in_(chunk)))
                count += _rowcount(result)
            removed[table.name] = count
        sessions = scope.select(AuthSession).with_only_columns(AuthSession.id)
        result = await session.execute(
            delete(RefreshToken).where(RefreshToken.session_id.in_(sessions))
        )
        removed[RefreshToken.__tablename__] = _rowcount(result)
        for model in reversed(tenant_models()):
            if model.__tablename__ in _KEPT:
                continue
            result = await session.execute(
                scope.delete(model).execution_options(synchronize_session=False)
            )
            removed[model.__tablename__] = _rowcount(result)
        return removed

    async def delete_tenant(self, session: AsyncSession, tenant_id: uuid.UUID) -> int:
        result = await session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        return _rowcount(result)

    async def audit_entries(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = select(func.count()).select_from(scope.select(AuditEntry).subquery())
        return int(await session.scalar(statement) or 0)

    # -- people --------------------------------------------------------------------------
    async def user(self, session: AsyncSession, user_id: uuid.UUID) -> User | None:
        return await session.get(User, user_id)

    async def memberships(self, session: AsyncSession, user_id: uuid.UUID) -> list[Membership]:
        return list(await session.scalars(select(Membership).where(Membership.user_id == user_id)))

    async def member_ids(self, session: AsyncSession, scope: TenantScope) -> list[uuid.UUID]:
        return list(
            await session.scalars(scope.select(Membership).with_only_columns(Membership.user_id))
        )

    async def admins(self, session: AsyncSession, scope: TenantScope) -> list[uuid.UUID]:
        statement = scope.select(Membership).where(Membership.role == Role.TENANT_ADMIN)
        return list(await session.scalars(statement.with_only_columns(Membership.user_id)))

    async def member_count(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = select(func.count()).select_from(scope.select(Membership).subquery())
        return int(await session.scalar(statement) or 0)

    async def audit_mentions(self, session: AsyncSession, user_id: uuid.UUID) -> int:
        """Entries naming the person, in every tenant and in none (kept by reference)."""
        statement = select(func.count()).where(_any(_mentions(user_id)))
        return int(await session.scalar(statement) or 0)

    def own_sessions(self, user_id: uuid.UUID, tenants: list[uuid.UUID] | None) -> TableRows:
        """The person's sign-ins: into `tenants`, or (None) everywhere and into none."""
        statement = select(AuthSession).where(AuthSession.user_id == user_id)
        if tenants is not None:
            statement = statement.where(AuthSession.tenant_id.in_(tenants))
        return TableRows(
            AuthSession.__tablename__,
            statement.order_by(AuthSession.created_at, AuthSession.id),
            exported_columns(AuthSession),
        )

    async def end_sessions(self, session: AsyncSession, user_id: uuid.UUID) -> tuple[int, int]:
        """Delete the person's sign-ins and refresh tokens: (sessions, tokens)."""
        theirs = select(AuthSession.id).where(AuthSession.user_id == user_id)
        tokens = await session.execute(
            delete(RefreshToken).where(RefreshToken.session_id.in_(theirs))
        )
        sessions = await session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))
        return _rowcount(sessions), _rowcount(tokens)

    async def revoke_keys_of(
        self, session: AsyncSession, scope: TenantScope, user_id: uuid.UUID, now: datetime
    ) -> int:
        result = await session.execute(
            scope.update(ApiKey)
            .where(ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)

    async def leave(self, session: AsyncSession, scope: TenantScope, user_id: uuid.UUID) -> int:
        """Remove the person's membership and pending invitation in the scope's tenant."""
        removed = 0
        for model in (Membership, Invitation):
            result = await session.execute(
                scope.delete(model)
                .where(table_of(model).c.user_id == user_id)
                .execution_options(synchronize_session=False)
            )
            removed += _rowcount(result)
        return removed

    async def invitations_received(
        self, session: AsyncSession, user_id: uuid.UUID
    ) -> list[uuid.UUID]:
        """The tenants that invited the person (found by the person, as they see them)."""
        statement = select(Invitation.tenant_id).where(Invitation.user_id == user_id)
        return list(await session.scalars(statement))

    async def anonymise(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Keep the row (the audit log and the ledger refer to its id) with nothing that
        identifies the person: the chain stays verifiable and every reference now
        resolves to an erased account."""
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(
                email=erased_email(user_id),
                name="",
                password_hash=None,
                oidc_subject=None,
                is_active=False,
            )
            .execution_options(synchronize_session=False)
        )


def _mentions(user_id: uuid.UUID) -> list[ColumnElement[bool]]:
    return [
        AuditEntry.actor_user_id == user_id,
        (AuditEntry.target_type == "user") & (AuditEntry.target_id == str(user_id)),
    ]


def _any(criteria: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*criteria)


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


privacy_repository = PrivacyRepository()
