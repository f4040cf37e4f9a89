from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from apiary.db import Base, utcnow


class TenantLimits(Base):
    """A tenant's monthly budget and request/token rates; a missing value means no limit."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float)
    soft_limit_ratio: Mapped[float] = mapped_column(Float, default=0.8)
    tenant_rpm: Mapped[int | None] = mapped_column(Integer)  # requests per minute, whole tenant
    tenant_tpm: Mapped[int | None] = mapped_column(Integer)  # tokens per minute, whole tenant
    key_rpm: Mapped[int | None] = mapped_column(Integer)  # requests per minute, per API key
    key_tpm: Mapped[int | None] = mapped_column(Integer)  # tokens per minute, per API key
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
