"""Ledger rollups, monthly partitions of the ledger on PostgreSQL, and per-plan retention

`ledger_rollups` sums the ledger per tenant, hour and UTC day and dimension values; it is
filled here from the rows already stored, and from now on in the ledger writer's batches.
On PostgreSQL `ledger_entries` becomes a table partitioned by RANGE (created_at), one
partition per month, keeping every row (its primary key becomes (id, created_at), as a
partitioned table's unique keys must hold the partition key). `plans.ledger_retention_days`
is how long a plan's raw rows are kept.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 00:30:00
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import apiary.db
from apiary.usage import partitions, rollups

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_ledger_entries_tenant_id", "tenant_id"),
    ("ix_ledger_entries_tenant_time", "tenant_id, created_at"),
    ("ix_ledger_entries_tenant_key_time", "tenant_id, api_key_id, created_at"),
)


def _months(bind: sa.Connection) -> list[dt.date]:
    low, high = bind.execute(
        sa.text("SELECT min(created_at), max(created_at) FROM ledger_entries_plain")
    ).one()
    now = dt.datetime.now(dt.UTC)
    month = partitions.month_of(low or now)
    last = partitions.month_of(max(high or now, now) + dt.timedelta(days=62))
    found = []
    while month <= last:
        found.append(month)
        month = partitions.next_month(month)
    return found


def _partition(bind: sa.Connection) -> None:
    op.execute("ALTER TABLE ledger_entries RENAME TO ledger_entries_plain")
    op.execute(
        "ALTER TABLE ledger_entries_plain RENAME CONSTRAINT pk_ledger_entries TO pk_ledger_entries_plain"
    )
    op.execute(
        "ALTER TABLE ledger_entries_plain RENAME CONSTRAINT fk_ledger_entries_tenant_id_tenants "
        "TO fk_ledger_entries_plain_tenant_id_tenants"
    )
    for name, _ in _INDEXES[:2]:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_plain")
    op.execute(
        "CREATE TABLE ledger_entries (LIKE ledger_entries_plain INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (created_at)"
    )
    op.execute(
        "ALTER TABLE ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY (id, created_at)"
    )
    op.execute(
        "ALTER TABLE ledger_entries ADD CONSTRAINT fk_ledger_entries_tenant_id_tenants "
        "FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE"
    )
    for name, columns in _INDEXES:
        op.execute(f"CREATE INDEX {name} ON ledger_entries ({columns})")
    for month in _months(bind):
        op.execute(partitions.create_sql(month))
    op.execute("INSERT INTO ledger_entries SELECT * FROM ledger_entries_plain")
    op.execute("DROP TABLE ledger_entries_plain")


def _backfill(bind: sa.Connection) -> None:
    """The rollups of the rows already in the ledger, summed per hour by the database."""
    e = sa.table(
        "ledger_entries",
        *(sa.column(name) for name in ("tenant_id", "created_at", *rollups.DIMENSIONS)),
        *(
            sa.column(name)
            for name in (
                "status",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cost_usd",
                "saved_usd",
            )
        ),
    )
    select = sa.select(e).execution_options(yield_per=10_000)
    table = sa.table(
        "ledger_rollups",
        *(
            sa.column(name)
            for name in (
                "tenant_id",
                "period",
                "bucket_start",
                "dims",
                *rollups.DIMENSIONS,
                *rollups.MEASURES,
            )
        ),
    )
    batch: list[dict[str, object]] = []
    sums: dict[tuple[object, ...], dict[str, object]] = {}

    def fold() -> None:
        for row in rollups.aggregate(batch):
            key = (row["tenant_id"], row["period"], row["bucket_start"], row["dims"])
            known = sums.get(key)
            if known is None:
                sums[key] = row
            else:
                for name in rollups.MEASURES:
                    known[name] += row[name]
        batch.clear()

    for row in bind.execute(select).mappings():
        entry = dict(row)
        if isinstance(entry["created_at"], str):
            entry["created_at"] = dt.datetime.fromisoformat(entry["created_at"])
        entry["priced"] = bool(entry["priced"])
        entry["cache_hit"] = bool(entry["cache_hit"])
        batch.append(entry)
        if len(batch) >= 10_000:
            fold()
    fold()
    if sums:
        bind.execute(sa.insert(table), list(sums.values()))


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "ledger_rollups",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=5), nullable=False),
        sa.Column("bucket_start", apiary.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("dims", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("priced", sa.Boolean(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("route", sa.String(length=100), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("agent_id", sa.Uuid(), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("billable_cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("cache_hits", sa.BigInteger(), nullable=False),
        sa.Column("saved_usd", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ledger_rollups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period", "bucket_start", "dims", name=op.f("pk_ledger_rollups")
        ),
    )
    op.create_index("ix_ledger_rollups_period_bucket", "ledger_rollups", ["period", "bucket_start"])
    op.add_column("plans", sa.Column("ledger_retention_days", sa.Integer(), nullable=True))
    if bind.dialect.name == "postgresql":
        _partition(bind)
    else:
        op.create_index(
            "ix_ledger_entries_tenant_key_time",
            "ledger_entries",
            ["tenant_id", "api_key_id", "created_at"],
        )
    _backfill(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE ledger_entries RENAME TO ledger_entries_parted")
        op.execute(
            "ALTER TABLE ledger_entries_parted RENAME CONSTRAINT pk_ledger_entries "
            "TO pk_ledger_entries_parted"
        )
        op.execute(
            "ALTER TABLE ledger_entries_parted RENAME CONSTRAINT "
            "fk_ledger_entries_tenant_id_tenants TO fk_ledger_entries_parted_tenant_id_tenants"
        )
        for name, _ in _INDEXES:
            op.execute(f"ALTER INDEX {name} RENAME TO {name}_parted")
        op.execute("CREATE TABLE ledger_entries (LIKE ledger_entries_parted INCLUDING DEFAULTS)")
        op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY (id)")
        op.execute(
            "ALTER TABLE ledger_entries ADD CONSTRAINT fk_ledger_entries_tenant_id_tenants "
            "FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE"
        )
        for name, columns in _INDEXES[:2]:
            op.execute(f"CREATE INDEX {name} ON ledger_entries ({columns})")
        op.execute("INSERT INTO ledger_entries SELECT * FROM ledger_entries_parted")
        op.execute("DROP TABLE ledger_entries_parted")
    else:
        op.drop_index("ix_ledger_entries_tenant_key_time", table_name="ledger_entries")
    # A plain ALTER TABLE, also on SQLite (3.35+): a batch copy would drop and recreate
    # `plans`, which tenants reference, and fail once a tenant exists.
    op.drop_column("plans", "ledger_retention_days")
    op.drop_index("ix_ledger_rollups_period_bucket", table_name="ledger_rollups")
    op.drop_table("ledger_rollups")
