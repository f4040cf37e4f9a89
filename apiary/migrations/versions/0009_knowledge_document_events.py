"""knowledge document ingestion events

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 02:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import apiary.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.add_column(
            sa.Column("last_event_seq", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "knowledge_document_events",
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", apiary.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["knowledge_documents.id"],
            name=op.f("fk_knowledge_document_events_document_id_knowledge_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_knowledge_document_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_document_events")),
        sa.UniqueConstraint("document_id", "seq", name="uq_knowledge_document_events_seq"),
    )
    op.create_index(
        op.f("ix_knowledge_document_events_tenant_id"),
        "knowledge_document_events",
        ["tenant_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_knowledge_document_events_tenant_id"), table_name="knowledge_document_events"
    )
    op.drop_table("knowledge_document_events")
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.drop_column("last_event_seq")
