from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from apiary.db import Base, utcnow

GENESIS = "0" * 64  # what the first entry links to


class AuditEntry(Base):
    """One action. `hash` covers this entry's fields and the previous entry's hash."""

    __tablename__ = "audit_entries"

    # BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # No foreign keys: the log outlives what it describes (a removed tenant keeps its trail).
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    actor_user_id: Mapped[uuid.UUID | None]
    actor_api_key_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChainHead(Base):
    """The newest entry's hash and the entry count, in one row.

    Appenders update this row before reading it, which serializes them across processes
    (a row lock on PostgreSQL, the database write lock on SQLite), and `verify` compares
    the chain's end with it, so entries cut from the end are noticed too.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    # Every entry ever appended, the pruned ones included.
    entries: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # Entries `apiary audit prune` archived and removed from the table, and the last one's
    # hash, which the oldest entry left must link to (64 zeros while nothing was pruned).
    pruned_entries: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), default=0, server_default="0"
    )
    pruned_hash: Mapped[str] = mapped_column(String(64), default=GENESIS, server_default=GENESIS)
