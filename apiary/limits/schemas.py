from __future__ import annotations

from datetime import datetime

from pydantic import Field

from apiary.kit.schemas import INT32_MAX, Schema, UpdateSchema


class Limits(Schema):
    monthly_budget_usd: float | None = Field(description="Hard monthly budget; null: none")
    soft_limit_ratio: float = Field(description="Share of the budget that triggers a warning")
    tenant_rpm: int | None
    tenant_tpm: int | None
    key_rpm: int | None
    key_tpm: int | None
    updated_at: datetime | None = None


class LimitsUpdate(UpdateSchema):
    """Every field optional; send null to remove a limit."""

    nullable = frozenset(
        {"monthly_budget_usd", "soft_limit_ratio", "tenant_rpm", "tenant_tpm", "key_rpm", "key_tpm"}
    )

    monthly_budget_usd: float | None = Field(default=None, ge=0)
    soft_limit_ratio: float | None = Field(default=None, gt=0, le=1)
    tenant_rpm: int | None = Field(default=None, ge=1, le=INT32_MAX)
    tenant_tpm: int | None = Field(default=None, ge=1, le=INT32_MAX)
    key_rpm: int | None = Field(default=None, ge=1, le=INT32_MAX)
    key_tpm: int | None = Field(default=None, ge=1, le=INT32_MAX)


class Spend(Schema):
    month: str
    spent_usd: float
    monthly_budget_usd: float | None
    remaining_usd: float | None
