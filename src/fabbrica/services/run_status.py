"""What a backend says about a run, applied to its job: state, times, and the charge.

Used by the control loop for executors it drives itself and by the agent API for runs a
site agent reports. A finished run is charged once (see `accounting.settle`); a lost one
gives its reservation back and queues the job again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog, Partition
from fabbrica.core.billing import Holding, charged_gpu_hours
from fabbrica.core.executor import (
    CheckpointRequest,
    DataMount,
    LaunchRequest,
    RunState,
    RunStatus,
)
from fabbrica.core.jobs import FROM_RUN, JobState, job_command, run_tag
from fabbrica.core.jobspec import JobSpec
from fabbrica.services import accounting
from fabbrica.store.models import Job, JobLoss, UsageRecord

MAX_RUNS = 20  # a job that keeps timing out stops resuming after this many runs
UNPLACED = "unplaced"  # a job lost before it had a factory (never seen: it had one)


def apply_status(
    session: Session, catalog: Catalog, job: Job, status: RunStatus, now: dt.datetime
) -> int:
    """Record what the backend says; charge a job that ended. 1 if the job changed."""
    if status.state in (RunState.UNKNOWN, RunState.LOST):
        return requeue_lost(session, job, now)
    state = FROM_RUN[status.state]
    if status.site_job_id:
        job.site_job_id = status.site_job_id
    if state.value == job.state and not state.finished:
        if state is JobState.DISPATCHED:
            job.reason = status.reason  # why it waits there (an agent: staging its data)
        return 0
    if status.started_at is not None:
        job.started_at = status.started_at
    if not state.finished:  # started: what held it (staging its data) holds it no more
        job.reason = status.reason if state is JobState.DISPATCHED else None
    if state.finished:
        started = job.started_at or status.ended_at or now
        ended = status.ended_at or now
        elapsed = (
            status.elapsed_s
            if status.elapsed_s is not None
            else max((ended - started).total_seconds(), 0.0)
        )
        gpus = status.gpus if status.gpus is not None else job.gpus
        accounting.settle(
            session,
            job,
            charge=charge(catalog, job, gpus, elapsed),
            gpus=gpus,
            elapsed_s=elapsed,
            now=now,
            site_job_id=status.site_job_id,
        )
        job.ended_at, job.exit_code = ended, status.exit_code
        job.reason = status.reason
        job.lease_until = None
        if state is JobState.TIMED_OUT and _resumes(job):
            return queue_next_run(job, f"timed out at {job.factory_id} (run {job.run})")
    job.state = state.value
    return 1


def _resumes(job: Job) -> bool:
    """A run that reached its time limit queues the job again: it asked to (`resume`),
    nobody asked to stop it, and it has runs left."""
    if job.cancel_requested or job.run >= MAX_RUNS:
        return False
    return JobSpec.model_validate_json(job.spec).resume


def queue_next_run(job: Job, why: str) -> int:
    """The job waits again for its next run (charged already, or released); it may be
    placed elsewhere, and starts from the checkpoints its last run left."""
    # its agent may report the run that ended once more (it holds it until its log and
    # checkpoint are sent): a report of that run is stale, never the next run's end
    _mark_lost(job)
    job.state, job.reason = JobState.QUEUED.value, f"{why}; queued again to resume"
    job.run += 1
    job.factory_id = job.partition_id = None
    job.allocation_id, job.started_at, job.dispatched_at = None, None, None
    job.ended_at, job.exit_code = None, None
    job.lease_until, job.site_job_id = None, None
    return 1


def _mark_lost(job: Job) -> None:
    """Remember the run that ended (site and id) before the job is placed anew: Slurm's job
    ids start at 1 on every cluster, so an id alone could name the next run elsewhere."""
    if job.site_job_id is None:
        return
    marked = f"{job.factory_id}:{job.site_job_id}"
    job.lost_site_job_id = marked if len(marked) <= 64 else job.site_job_id


def is_stale(job: Job, factory_id: str, site_job_id: str | None) -> bool:
    """Whether a report of `site_job_id` at `factory_id` is of the job's run before it was
    queued again (lost, or timed out to resume), never of its run now."""
    if site_job_id is None or job.lost_site_job_id is None:
        return False
    return job.lost_site_job_id in (f"{factory_id}:{site_job_id}", site_job_id)


def charged_already(session: Session, job: Job, factory_id: str, site_job_id: str) -> bool:
    """Whether that site job of `job` at `factory_id` was charged: it is a run that ended
    (timed out, and the job queued again), whose agent may report it once more after the
    job was placed there anew; that report is never the next run's end."""
    found = session.scalar(
        select(UsageRecord.id).where(
            UsageRecord.job_id == job.id,
            UsageRecord.factory_id == factory_id,
            UsageRecord.site_job_id == site_job_id,
        )
    )
    return found is not None


def launch_request(job: Job, datasets: tuple[DataMount, ...] = ()) -> LaunchRequest:
    """What an executor needs to run `job` (tagged with its run tag), with the data sets
    it reads (`datasets`, where their files are on the executor's machine)."""
    spec = JobSpec.model_validate_json(job.spec)
    checkpoint = None
    if spec.checkpoint is not None:
        every, grace = spec.checkpoint.every, spec.checkpoint.grace
        checkpoint = CheckpointRequest(spec.checkpoint.dir, every, grace)
    return LaunchRequest(
        run_tag=run_tag(job.id),
        run=job.run,
        checkpoint=checkpoint,
        partition=job.partition_id or "",
        gpus=job.gpus,
        nodes=job.nodes,
        time_limit=dt.timedelta(seconds=job.time_limit_s),
        command=job_command(spec.setup, spec.run),
        env=dict(spec.env),
        gpu_model=job.gpu_model,
        workdir_archive=job.workdir_archive,
        owner=job.user_id,
        datasets=datasets,
    )


def requeue_lost(session: Session, job: Job, now: dt.datetime) -> int:
    """The site has no trace of the run, or stopped answering: give its hours back and
    queue the job again (it may be placed elsewhere); the loss is counted (JobLoss)."""
    session.add(
        JobLoss(
            job_id=job.id,
            factory_id=job.factory_id or UNPLACED,
            lost_at=now,
            run=job.run,
            site_job_id=job.site_job_id,
            partition_id=job.partition_id,
            allocation_id=job.allocation_id,
        )
    )
    accounting.release(session, job)
    # dispatch keeps the "lost at X; queued again" head while the job waits again
    job.state, job.reason = JobState.QUEUED.value, f"lost at {job.factory_id}; queued again"
    _mark_lost(job)
    job.run += 1  # the next run starts anew, with the checkpoints the executor kept
    job.factory_id = job.partition_id = None
    job.allocation_id, job.started_at, job.dispatched_at = None, None, None
    job.lease_until, job.site_job_id = None, None
    return 1


def settle_lost_run(
    session: Session,
    catalog: Catalog,
    job: Job,
    factory_id: str,
    status: RunStatus,
    now: dt.datetime,
) -> float:
    """A run lost with its site, reported ended by that site after all (`status`, with its
    site job id): charge it for its time, once, to the allocation it held (never past the
    grant). 0 when `status` is no lost run of the job, or it was charged already."""
    loss = session.scalar(
        select(JobLoss).where(
            JobLoss.job_id == job.id,
            JobLoss.factory_id == factory_id,
            JobLoss.site_job_id == status.site_job_id,
        )
    )
    if loss is None or loss.run is None or loss.allocation_id is None:
        return 0.0
    done = session.scalar(
        select(UsageRecord.id).where(
            (UsageRecord.job_id == job.id) & (UsageRecord.run == loss.run)
            | (UsageRecord.factory_id == factory_id)
            & (UsageRecord.site_job_id == status.site_job_id)
        )
    )
    if done is not None:
        return 0.0
    elapsed = status.elapsed_s
    if elapsed is None:
        start, end = status.started_at, status.ended_at
        elapsed = max((end - start).total_seconds(), 0.0) if start and end else 0.0
    gpus = status.gpus if status.gpus is not None else job.gpus
    partition = _partition_at(catalog, factory_id, loss.partition_id)
    return accounting.settle_lost(
        session,
        job,
        allocation_id=loss.allocation_id,
        run=loss.run,
        charge=_charge_under(partition, gpus, job.nodes, elapsed),
        gpus=gpus,
        elapsed_s=elapsed,
        now=now,
        factory_id=factory_id,
        site_job_id=status.site_job_id,
    )


def charge(catalog: Catalog, job: Job, gpus: int, elapsed_s: float) -> float:
    """GPU-hours charged for `gpus` (on all the job's nodes) x `elapsed_s` under the job's
    partition's billing (whole nodes: each of the job's nodes)."""
    return _charge_under(_partition(catalog, job), gpus, job.nodes, elapsed_s)


def _charge_under(partition: Partition | None, gpus: int, nodes: int, elapsed_s: float) -> float:
    if partition is None:
        return gpus * elapsed_s / 3600.0
    held = Holding(gpus=gpus, nodes=max(nodes, 1))
    return charged_gpu_hours(partition.billing, partition.gpus_per_node, held, elapsed_s / 3600.0)


def _partition(catalog: Catalog, job: Job) -> Partition | None:
    return _partition_at(catalog, job.factory_id, job.partition_id)


def _partition_at(
    catalog: Catalog, factory_id: str | None, partition_id: str | None
) -> Partition | None:
    factory = catalog.factory(factory_id or "")
    if factory is None:
        return None
    return next((p for _, p in factory.partitions() if p.id == partition_id), None)
