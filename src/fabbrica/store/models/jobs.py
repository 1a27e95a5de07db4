"""Jobs and the usage they charge."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.access import Allocation, Project
from fabbrica.store.models.base import Base


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_project_pk", "project_pk"),
        Index("ix_jobs_array_id", "array_id"),
        # the first job of each allocation (federation report): a range per allocation
        Index("ix_jobs_allocation_id_started_at", "allocation_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(Text)  # the validated spec, as JSON
    state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(Text)
    gpus: Mapped[int]  # on all its nodes (the spec says per node)
    nodes: Mapped[int]
    gpu_model: Mapped[str | None] = mapped_column(String(64))
    time_limit_s: Mapped[int]
    factory_id: Mapped[str | None] = mapped_column(String(64))
    partition_id: Mapped[str | None] = mapped_column(String(64))
    allocation_id: Mapped[int | None] = mapped_column(ForeignKey("allocations.id"))
    reserved_gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours: Mapped[float | None] = mapped_column(Float)  # charged, once ended
    workdir_archive: Mapped[str | None] = mapped_column(String(1024))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Jobs run by a site agent: until when its claim holds, and the site's id of the run.
    lease_until: Mapped[dt.datetime | None]
    site_job_id: Mapped[str | None] = mapped_column(String(64))
    # the site's id of its previous run (lost, or ended and queued again to resume): reports
    # of that run are stale
    lost_site_job_id: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[dt.datetime]
    dispatched_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    exit_code: Mapped[int | None]
    # a task of a job array: the array's first task (its own id for that one), its index
    array_id: Mapped[int | None]
    array_index: Mapped[int | None]
    # the job's run: 1, then one more each time it is queued again (lost, or timed out
    # with `resume`); each run is charged once (a usage record per run)
    run: Mapped[int] = mapped_column(default=1, server_default="1")

    project: Mapped[Project] = relationship()
    allocation: Mapped[Allocation | None] = relationship()


class UsageRecord(Base):
    """What one run of a job charged to one allocation: exactly one row per run of a job
    (a job that resumed has one per run), and one per run at a site (a usage report sent
    twice is charged once)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("factory_id", "site_job_id"),
        UniqueConstraint("job_id", "run", name="uq_usage_records_job_id_run"),
        # the usage of a period by allocation (federation report), read from the index alone
        Index("ix_usage_records_created_at", "created_at", "allocation_id", "gpu_hours"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    run: Mapped[int] = mapped_column(default=1, server_default="1")
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"))
    gpus: Mapped[int]
    elapsed_s: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime]
    factory_id: Mapped[str | None] = mapped_column(String(64))
    site_job_id: Mapped[str | None] = mapped_column(String(64))


class JobLoss(Base):
    """A factory lost a job (its site went quiet, the claim ran out, or the site had no
    trace of the run) and it was queued again: one row each time, never updated, so that
    `fabbrica_jobs_lost_total` counts every loss, after restarts and on every replica.
    The lost run (its number, site job id, partition and allocation) is kept too: when the
    site reports it ended after all, that run is charged for its time (once)."""

    __tablename__ = "job_losses"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    factory_id: Mapped[str] = mapped_column(String(64))
    lost_at: Mapped[dt.datetime]
    run: Mapped[int | None]
    site_job_id: Mapped[str | None] = mapped_column(String(64))
    partition_id: Mapped[str | None] = mapped_column(String(64))
    allocation_id: Mapped[int | None]
