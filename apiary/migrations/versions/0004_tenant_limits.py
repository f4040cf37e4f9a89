"""tenant limits: monthly budget, soft threshold, request and token rates

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import apiary.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_limits",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("monthly_budget_usd", sa.Float(), nullable=True),
        sa.Column("soft_limit_ratio", sa.Float(), nullable=False),
        sa.Column("tenant_rpm", sa.Integer(), nullable=True),
        sa.Column("tenant_tpm", sa.Integer(), nullable=True),
        sa.Column("key_rpm", sa.Integer(), nullable=True),
        sa.Column("key_tpm", sa.Integer(), nullable=True),
        sa.Column("updated_at", apiary.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_limits_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_limits")),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
