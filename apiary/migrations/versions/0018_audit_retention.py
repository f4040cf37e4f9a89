"""Audit retention: the chain head records what `apiary audit prune` removed, and on
PostgreSQL the append-only trigger lets entries past the retention floor be deleted

`audit_chain_head` gains `pruned_entries` and `pruned_hash` (where the chain left in the
table starts). The trigger of 0015 still refuses every UPDATE, and every DELETE of an entry
younger than the floor (seven years, the plan's retention): shortening it means replacing
this function, which only its owner can do, so the application's credentials alone can
never remove recent entries.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "apiary_audit_append_only"
GENESIS = "0" * 64
FLOOR_DAYS = 2557  # apiary.audit.service.PRUNE_FLOOR_DAYS


def upgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch_op:
        batch_op.add_column(
            sa.Column(
                "pruned_entries",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=False,
                server_default="0",
            )
        )
        batch_op.add_column(
            sa.Column("pruned_hash", sa.String(64), nullable=False, server_default=GENESIS)
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND OLD.created_at < now() - interval '{FLOOR_DAYS} days' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
    with op.batch_alter_table("audit_chain_head") as batch_op:
        batch_op.drop_column("pruned_hash")
        batch_op.drop_column("pruned_entries")
