"""metrics and the federation report: every job loss counted, the first job of an allocation
found by an index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

`job_losses` has a row each time a factory lost a job (the counter
`fabbrica_jobs_lost_total`); losses before this revision left no trace and are not counted.
`ix_jobs_allocation_id_started_at` lets the federation report find each allocation's first
job without reading the jobs table, `ix_usage_records_created_at` read a period's usage by
allocation from the index alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fabbrica.store.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_losses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("factory_id", sa.String(length=64), nullable=False),
        sa.Column("lost_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_losses_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_losses")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_allocation_id_started_at", ["allocation_id", "started_at"], unique=False
        )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_records_created_at",
            ["created_at", "allocation_id", "gpu_hours"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_created_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_allocation_id_started_at")
    op.drop_table("job_losses")
