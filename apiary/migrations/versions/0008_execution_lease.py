"""executions: the lease of the worker running one

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import apiary.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("lease_until", apiary.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
