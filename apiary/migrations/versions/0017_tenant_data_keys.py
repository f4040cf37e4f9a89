"""tenant_data_keys: each tenant's data keys for encryption at rest, stored wrapped by a
key-encryption key (the row names which). Existing documents and memory stay readable as
plaintext; `apiary encryption reencrypt` encrypts them.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import apiary.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_data_keys",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=500), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("rewrapped_at", apiary.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", apiary.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_data_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_data_keys")),
        sa.UniqueConstraint("tenant_id", "version", name="uq_tenant_data_keys_version"),
    )


def downgrade() -> None:
    op.drop_table("tenant_data_keys")
