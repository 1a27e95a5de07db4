"""Jobs: submit (with every check that can be made before queueing), list, show, cancel."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.jobs import JobState
from fabbrica.core.jobspec import JobSpec
from fabbrica.sched.capacity import charge
from fabbrica.sched.model import Job as SchedJob
from fabbrica.sched.model import Partition as SchedPartition
from fabbrica.sched.placement import fits
from fabbrica.sched.reasons import no_candidate_reason
from fabbrica.services.access.allocations import in_force
from fabbrica.services.access.visibility import (
    job_filter,
    member_project_pks,
    visible_project,
)
from fabbrica.services.accounting import remaining
from fabbrica.services.single_user import SingleUser
from fabbrica.store.models import Allocation, Job, Project, ProjectMember, User


def partitions_of(catalog: Catalog, factories: set[str] | None = None) -> list[SchedPartition]:
    """The operating partitions of the catalog (of `factories` only, when given), as the
    scheduler sees them, with no free GPUs: capacity comes from the executors."""
    found = []
    for factory in catalog.factories:
        if factories is not None and factory.id not in factories:
            continue
        for p in factory.operating_partitions():
            found.append(
                SchedPartition(
                    factory=factory.id,
                    id=p.id,
                    country=factory.country,
                    gpu_model=p.gpu_model,
                    gpus_per_node=p.gpus_per_node,
                    total_gpus=p.gpus,
                    free_gpus=0,
                    billing_factor=p.billing.factor,
                    whole_nodes=p.billing.rule == "whole_node",
                    multi_node=not factory.emulated,
                )
            )
    return found


def as_sched_job(job: Job, spec: JobSpec, home_country: str | None) -> SchedJob:
    placement = spec.placement
    return SchedJob(
        id=str(job.id),
        project=job.project.id or "",
        gpus=job.gpus,
        nodes=job.nodes,
        time_limit=float(job.time_limit_s),
        submitted_at=job.submitted_at.timestamp(),
        gpu_model=job.gpu_model,
        factories=frozenset(placement.factories) if placement.factories else None,
        countries=frozenset(placement.countries) if placement.countries else None,
        home_country=home_country,
    )


def submit(
    session: Session,
    actor: User,
    catalog: Catalog,
    spec: JobSpec,
    *,
    project_id: str | None,
    connected: set[str],
    workdir_archive: str | None,
    now: dt.datetime,
    single_user: SingleUser | None = None,
) -> Job:
    """Queue a job. Refused (InvalidInput, the numbers in the message) when no connected
    partition could ever run it, when its worst case exceeds what every eligible
    allocation of its project has left, or when it could run only on factories that run
    another user's jobs only (`single_user`)."""
    project = _project(session, actor, project_id or spec.project)
    _check_names(catalog, spec)
    job = Job(
        project_pk=project.pk,
        user_id=actor.id,
        name=spec.name,
        spec=spec.model_dump_json(),
        state=JobState.QUEUED.value,
        gpus=spec.resources.gpus,
        nodes=spec.resources.nodes,
        gpu_model=spec.resources.gpu_model,
        time_limit_s=spec.resources.time_limit,
        workdir_archive=workdir_archive,
        submitted_at=now,
        reserved_gpu_hours=0.0,
    )
    job.project = project
    probe = as_sched_job(job, spec, project.organisation.country)
    parts = [p for p in partitions_of(catalog, connected) if _fits(probe, p)]
    if not parts:
        reason = no_candidate_reason(probe, tuple(partitions_of(catalog, connected)))
        raise InvalidInput(f"the job cannot run anywhere: {reason}", field="resources")
    _check_allocations(session, project, probe, parts, now)
    if single_user is not None:
        _check_single_user(session, single_user, actor, project, probe, parts, now)
    session.add(job)
    session.flush()
    return job


def _project(session: Session, actor: User, project_id: str | None) -> Project:
    """The named project, or, when none is named, the one project the user belongs to."""
    if project_id:
        project = visible_project(session, actor, project_id, field="project")
        # staff see projects (operators: those that applied to their factories), but only
        # the project's people spend its allocations
        if session.scalar(member_project_pks(actor).where(Project.pk == project.pk)) is None:
            raise Forbidden(f"only the members of {project.id} submit jobs to it")
        return project
    mine = list(
        session.scalars(
            select(Project)
            .join(ProjectMember, ProjectMember.project_pk == Project.pk)
            .where(ProjectMember.user_id == actor.id)
            .order_by(Project.pk)
            .limit(11)
        )
    )
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise InvalidInput("you are in no project yet: create one, or be invited", "project")
    names = ", ".join(p.id or "" for p in mine[:10])
    raise InvalidInput(f"name the project (in the spec or with --project): {names}", "project")


def _check_names(catalog: Catalog, spec: JobSpec) -> None:
    known_factories = {f.id for f in catalog.factories}
    for factory in spec.placement.factories or ():
        if factory not in known_factories:
            raise InvalidInput(f"unknown factory {factory!r}", field="placement.factories")
    model = spec.resources.gpu_model
    models = {p.gpu_model for f in catalog.factories for _, p in f.partitions()}
    if model is not None and model not in models:
        known = ", ".join(sorted(models))
        raise InvalidInput(f"unknown GPU model {model!r} (known: {known})", "resources.gpu_model")


def _fits(job: SchedJob, partition: SchedPartition) -> bool:
    allowed = job.factories is None or partition.factory in job.factories
    return allowed and fits(job, partition)


def _check_allocations(
    session: Session,
    project: Project,
    job: SchedJob,
    parts: list[SchedPartition],
    now: dt.datetime,
) -> None:
    live = list(session.scalars(in_force(now).where(Allocation.project_pk == project.pk)))
    best: tuple[float, float, str] | None = None
    for part in parts:
        worst = charge(part, job)
        for allocation in live:
            if allocation.factory_id != part.factory:
                continue
            if allocation.gpu_model not in (None, part.gpu_model):
                continue
            left = remaining(allocation)
            if left + 1e-9 >= worst:
                return
            if best is None or left > best[0]:
                best = (left, worst, part.factory)
    if best is None:
        factories = ", ".join(sorted({p.factory for p in parts}))
        raise InvalidInput(
            f"project {project.id} holds no valid allocation where the job can run ({factories})",
            field="project",
        )
    left, worst, factory = best
    raise InvalidInput(
        f"the job's worst case is {worst:,.2f} GPU-hours ({job.gpus} GPUs x "
        f"{job.time_limit / 3600:,.2f} h); the most any eligible allocation has left is "
        f"{left:,.2f} (on {factory})",
        field="resources",
    )


def _check_single_user(
    session: Session,
    single_user: SingleUser,
    actor: User,
    project: Project,
    job: SchedJob,
    parts: list[SchedPartition],
    now: dt.datetime,
) -> None:
    """Refused when every place the job could run is a factory held by another user."""
    refused = single_user.refused(session, actor.id, now)
    blocked = [p for p in parts if p.factory in refused]
    if not blocked:
        return
    open_parts = [p for p in parts if p.factory not in refused]
    if open_parts:
        try:
            _check_allocations(session, project, job, open_parts, now)
            return  # it can run elsewhere; dispatch keeps it off the held factories
        except InvalidInput:
            pass
    raise InvalidInput(refused[blocked[0].factory], field="placement.factories")


def get_job(session: Session, actor: User, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if (
        job is None
        or session.scalar(select(Job.id).where(Job.id == job_id, job_filter(actor))) is None
    ):
        raise NotFound(f"no job {job_id}", field="job_id")
    return job


def list_jobs(
    session: Session, actor: User, *, project_id: str | None = None, limit: int = 200
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(Job.project_pk == visible_project(session, actor, project_id).pk)
    query = query.where(job_filter(actor))
    return list(session.scalars(query))


def cancel(session: Session, actor: User, job_id: int, *, now: dt.datetime) -> Job:
    """A queued job is cancelled at once; a dispatched or running one is stopped by the
    control loop on its next round."""
    job = get_job(session, actor, job_id)
    state = JobState(job.state)
    if state.finished:
        raise Conflict(f"job {job.id} has already ended ({job.state})", field="state")
    if state is JobState.QUEUED:
        job.state, job.ended_at, job.reason = JobState.CANCELLED.value, now, "cancelled"
    else:
        job.cancel_requested = True
    return job
