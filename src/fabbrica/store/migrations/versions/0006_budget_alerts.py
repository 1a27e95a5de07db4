"""budget alerts: thresholds of GPU-hours and days left, operators' daily digests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

The 14- and 3-day notices counted in `allocations.expiry_notices_sent` become budget alerts
(`days_14`, `days_3`): the counter's value turns into those rows, so that nobody is told
twice, and the column goes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_allocations = sa.table(
    "allocations",
    sa.column("id", sa.Integer),
    sa.column("used_gpu_hours", sa.Float),
    sa.column("granted_gpu_hours", sa.Float),
    sa.column("valid_until", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("expiry_notices_sent", sa.Integer),
)
_alerts = sa.table(
    "budget_alerts",
    sa.column("allocation_id", sa.Integer),
    sa.column("threshold", sa.String),
    sa.column("message", sa.String),
    sa.column("used_gpu_hours", sa.Float),
    sa.column("granted_gpu_hours", sa.Float),
    sa.column("valid_until", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_DAYS = ((1, "days_14", 14), (2, "days_3", 3))


def upgrade() -> None:
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("allocation_id", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.String(length=12), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.Column("used_gpu_hours", sa.Float(), nullable=False),
        sa.Column("granted_gpu_hours", sa.Float(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["allocations.id"],
            name=op.f("fk_budget_alerts_allocation_id_allocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint(
            "allocation_id", "threshold", name=op.f("uq_budget_alerts_allocation_id")
        ),
    )
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_budget_alerts_created_at", ["created_at"], unique=False)
    op.create_table(
        "operator_digests",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("allocations", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_operator_digests_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "day", name="pk_operator_digests"),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(_allocations).where(_allocations.c.expiry_notices_sent > 0))
    alerts = [
        {
            "allocation_id": row.id,
            "threshold": threshold,
            "message": f"Allocation {row.id} has {days} days left (told before this release)",
            "used_gpu_hours": row.used_gpu_hours,
            "granted_gpu_hours": row.granted_gpu_hours,
            "valid_until": row.valid_until,
            "created_at": row.created_at,
        }
        for row in rows
        for sent, threshold, days in _DAYS
        if row.expiry_notices_sent >= sent
    ]
    if alerts:
        conn.execute(sa.insert(_alerts), alerts)
    # native on PostgreSQL and SQLite >= 3.35: no copy of the table (its CHECKs stay)
    op.execute("ALTER TABLE allocations DROP COLUMN expiry_notices_sent")


def downgrade() -> None:
    op.add_column(
        "allocations",
        sa.Column("expiry_notices_sent", sa.Integer(), nullable=False, server_default="0"),
    )
    conn = op.get_bind()
    for sent, threshold, _ in _DAYS:
        told = sa.select(_alerts.c.allocation_id).where(_alerts.c.threshold == threshold)
        conn.execute(
            sa.update(_allocations)
            .where(_allocations.c.id.in_(told))
            .values(expiry_notices_sent=sent)
        )
    op.drop_table("operator_digests")
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_alerts_created_at")
    op.drop_table("budget_alerts")
