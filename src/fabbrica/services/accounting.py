"""Accounting: reserve GPU-hours when a job is dispatched, charge what it used when it
ends, release the rest. used + reserved never exceeds granted: each change locks the
allocation row, and a CHECK constraint holds the line in the database as well."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.core.errors import Conflict
from fabbrica.store.models import Allocation, Job, UsageRecord


def locked(session: Session, allocation_id: int) -> Allocation:
    """The allocation row, locked for this transaction and read fresh."""
    query = (
        select(Allocation)
        .where(Allocation.id == allocation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one()


def remaining(allocation: Allocation) -> float:
    return allocation.granted_gpu_hours - allocation.used_gpu_hours - allocation.reserved_gpu_hours


def reserve(session: Session, job: Job, allocation_id: int, hours: float) -> Allocation:
    allocation = locked(session, allocation_id)
    if hours > remaining(allocation) + 1e-9:
        raise Conflict(
            f"allocation {allocation.id} has {remaining(allocation):,.2f} GPU-hours left, "
            f"job {job.id} needs {hours:,.2f}",
            field="gpu_hours",
        )
    allocation.reserved_gpu_hours += hours
    job.allocation_id = allocation.id
    job.reserved_gpu_hours = hours
    return allocation


def settle(
    session: Session,
    job: Job,
    *,
    charge: float,
    gpus: int,
    elapsed_s: float,
    now: dt.datetime,
    site_job_id: str | None = None,
) -> float:
    """Charge what the job's current run used (`charge` GPU-hours under its partition's
    billing, as its site counted it) and release the rest of the reservation. A run the
    site ended some seconds past its time limit (Slurm checks limits every 30 s or so,
    then waits KillWait) used more than its reservation: the excess comes from what the
    allocation has left, never past the grant. Idempotent: each run of a job is charged
    once (one usage record per job and run, unique in the database too); the job's
    `gpu_hours` adds up its runs."""
    if job.allocation_id is None:
        return 0.0
    existing = session.scalar(
        select(UsageRecord).where(UsageRecord.job_id == job.id, UsageRecord.run == job.run)
    )
    if existing is not None:
        return existing.gpu_hours
    allocation = locked(session, job.allocation_id)
    allocation.reserved_gpu_hours = max(allocation.reserved_gpu_hours - job.reserved_gpu_hours, 0.0)
    charged = min(max(charge, 0.0), max(job.reserved_gpu_hours, remaining(allocation), 0.0))
    job.reserved_gpu_hours = 0.0
    _record(session, job, allocation, job.run, charged, gpus, elapsed_s, now,
            job.factory_id, site_job_id)  # fmt: skip
    return charged


def settle_lost(
    session: Session,
    job: Job,
    *,
    allocation_id: int,
    run: int,
    charge: float,
    gpus: int,
    elapsed_s: float,
    now: dt.datetime,
    factory_id: str,
    site_job_id: str | None,
) -> float:
    """Charge a run lost with its site (its reservation long released) that the site
    reported ended after all: `charge` GPU-hours, never past what the allocation has left.
    The caller checks that the run was not charged already."""
    allocation = locked(session, allocation_id)
    charged = min(max(charge, 0.0), max(remaining(allocation), 0.0))
    _record(session, job, allocation, run, charged, gpus, elapsed_s, now, factory_id, site_job_id)
    return charged


def _record(
    session: Session,
    job: Job,
    allocation: Allocation,
    run: int,
    charged: float,
    gpus: int,
    elapsed_s: float,
    now: dt.datetime,
    factory_id: str | None,
    site_job_id: str | None,
) -> None:
    """The charge of one run of the job: on the allocation, the job and a usage record."""
    allocation.used_gpu_hours += charged
    job.gpu_hours = (job.gpu_hours or 0.0) + charged
    session.add(
        UsageRecord(
            job_id=job.id,
            run=run,
            allocation_id=allocation.id,
            gpus=gpus,
            elapsed_s=max(elapsed_s, 0.0),
            gpu_hours=charged,
            created_at=now,
            factory_id=factory_id,
            site_job_id=site_job_id,
        )
    )


def release(session: Session, job: Job) -> None:
    """Give a job's reservation back without charging (it never ran)."""
    if job.allocation_id is None or job.reserved_gpu_hours <= 0:
        return
    allocation = locked(session, job.allocation_id)
    allocation.reserved_gpu_hours = max(allocation.reserved_gpu_hours - job.reserved_gpu_hours, 0.0)
    job.reserved_gpu_hours = 0.0
