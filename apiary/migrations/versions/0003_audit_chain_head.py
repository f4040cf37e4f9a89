"""audit chain head: serializes appends across processes and anchors the chain's end

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    # Seed from the log as it stands: its newest hash and how many entries it holds.
    connection = op.get_bind()
    last = connection.execute(
        sa.text("SELECT hash FROM audit_entries ORDER BY seq DESC LIMIT 1")
    ).scalar()
    count = connection.execute(sa.text("SELECT COUNT(*) FROM audit_entries")).scalar() or 0
    op.bulk_insert(head, [{"id": 1, "head_hash": last or GENESIS, "entries": count}])


def downgrade() -> None:
    op.drop_table("audit_chain_head")
