from __future__ import annotations

from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from apiary.db import Base, IdMixin


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Tenant(IdMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=TenantStatus.ACTIVE)
    # The plan's key (apiary/billing): what the tenant may do and what it pays.
    plan: Mapped[str] = mapped_column(
        String(40), ForeignKey("plans.key"), default="free", index=True
    )
    currency: Mapped[str] = mapped_column(String(3), default="USD")  # its invoices' currency
    # The identity provider's tenant id (Azure AD `tid`) whose users sign in here via OIDC.
    oidc_tenant_id: Mapped[str | None] = mapped_column(String(200), unique=True)
