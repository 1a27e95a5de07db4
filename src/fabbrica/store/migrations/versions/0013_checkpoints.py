"""checkpoints and resume: a job's run number, a usage record per run

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

A job with `resume: true` that times out (or any job that is lost) is queued again as its
next run; each run is charged once, so a job may now have one usage record per run
(unique per job and run instead of per job).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint("uq_usage_records_job_id", type_="unique")
        batch_op.create_unique_constraint("uq_usage_records_job_id_run", ["job_id", "run"])


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_constraint("uq_usage_records_job_id_run", type_="unique")
        batch_op.create_unique_constraint("uq_usage_records_job_id", ["job_id"])
        batch_op.drop_column("run")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run")
