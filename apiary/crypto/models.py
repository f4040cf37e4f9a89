"""Tenants' data keys, stored only wrapped by a key-encryption key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiary.db import Base, IdMixin, utcnow


class TenantDataKey(IdMixin, Base):
    """One version of a tenant's data key. The newest version encrypts new data; older
    versions stay to decrypt what they encrypted. The row never holds the key itself."""

    __tablename__ = "tenant_data_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "version", name="uq_tenant_data_keys_version"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # Which KEK wrapped it: an environment kid, or a Key Vault key's versioned identifier.
    kek_id: Mapped[str] = mapped_column(String(500))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    rewrapped_at: Mapped[datetime | None] = mapped_column(default=None)

    def touch(self) -> None:
        self.rewrapped_at = utcnow()
