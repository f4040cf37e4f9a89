"""audit_entries append-only in PostgreSQL itself: a trigger refuses UPDATE and DELETE

Whatever the application (or anyone with its credentials) sends, an audit entry cannot be
changed or removed through SQL; only the table's owner disabling the trigger could, and the
hash chain still shows what was changed (`apiary audit verify`). SQLite (embedded, one
user's own file) has no roles to hold back, so it is left alone.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 22:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "audit_entries_append_only"
FUNCTION = "apiary_audit_append_only"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON audit_entries "
        f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON audit_entries")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
