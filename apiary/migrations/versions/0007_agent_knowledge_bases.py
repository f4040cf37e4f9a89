"""agents' knowledge bases, and the sources each sub-agent cited

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 01:25:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows get an empty list; new rows always carry a value from the models.
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("knowledge_base_ids", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("subtasks") as batch:
        batch.add_column(sa.Column("sources", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("subtasks") as batch:
        batch.drop_column("sources")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("knowledge_base_ids")
