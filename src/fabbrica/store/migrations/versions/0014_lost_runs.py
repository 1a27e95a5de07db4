"""lost runs: what a loss lost (run, site job id, partition, allocation), to charge it later

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

A run lost with its site (the site went quiet past the lease) may have run on: when the
site reports it ended, that run is charged for its time, once, to the allocation it held.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_losses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("site_job_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("partition_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("allocation_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_losses", schema=None) as batch_op:
        batch_op.drop_column("allocation_id")
        batch_op.drop_column("partition_id")
        batch_op.drop_column("site_job_id")
        batch_op.drop_column("run")
