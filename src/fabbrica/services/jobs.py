"""Jobs: submit (with every check that can be made before queueing), list, show, cancel."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, insert, select
from sqlalchemy.orm import Session, joinedload

from fabbrica.catalog.model import Catalog
from fabbrica.core.arrays import INDEX_VARIABLE, MAX_TASKS
from fabbrica.core.datasets import parse_ref
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
from fabbrica.services.datasets import JobData, link_job, resolve_for_job
from fabbrica.services.identity import mfa_refusal
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


def as_sched_job(
    job: Job, spec: JobSpec, home_country: str | None, data: JobData | None = None
) -> SchedJob:
    """The job as the scheduler sees it. The residency of the data sets it reads (`data`)
    narrows the countries of its placement, whatever the placement says."""
    placement = spec.placement
    countries = frozenset(placement.countries) if placement.countries else None
    if data is not None and data.countries is not None:
        countries = data.countries if countries is None else countries & data.countries
    return SchedJob(
        id=str(job.id),
        project=job.project.id or "",
        gpus=job.gpus,
        nodes=job.nodes,
        time_limit=float(job.time_limit_s),
        submitted_at=job.submitted_at.timestamp(),
        gpu_model=job.gpu_model,
        factories=frozenset(placement.factories) if placement.factories else None,
        countries=countries,
        home_country=home_country,
        residency=data.label if data is not None else None,
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
    recheck: Callable[[], set[str]] | None = None,
) -> Job:
    """Queue a job (or, for a spec with `array`, all its tasks at once: the first task is
    returned, the others share its `array_id`). Refused (InvalidInput, the numbers in the
    message) when no connected partition could ever run it, when its worst case (every
    task's, for an array) exceeds what every eligible allocation of its project has left,
    or when it could run only on factories that run another user's jobs only
    (`single_user`). With `recheck`, `connected` may be an earlier view: a job refused
    there is checked again on `recheck()` (the factories connected now)."""
    project = _project(session, actor, project_id or spec.project)
    _check_names(catalog, spec)
    data = resolve_for_job(session, project, [parse_ref(r) for r in spec.datasets])
    indices = spec.array_indices
    job = Job(
        project_pk=project.pk,
        user_id=actor.id,
        name=spec.name,
        spec=_task_spec(spec, indices[0]) if indices else spec.model_dump_json(),
        state=JobState.QUEUED.value,
        gpus=spec.resources.total_gpus,  # per node in the spec, in all from here on
        nodes=spec.resources.nodes,
        gpu_model=spec.resources.gpu_model,
        time_limit_s=spec.resources.time_limit,
        workdir_archive=workdir_archive,
        submitted_at=now,
        reserved_gpu_hours=0.0,
        array_index=indices[0] if indices else None,
    )
    job.project = project
    try:
        spec = _placed(session, actor, catalog, spec, job, data, connected, now, single_user)
    except (InvalidInput, Forbidden):
        # `connected` may be what this process saw earlier (factories only ever join):
        # refused there, the job is checked again on the factories connected now
        if recheck is None or (fresh := recheck()) == connected:
            raise
        spec = _placed(session, actor, catalog, spec, job, data, fresh, now, single_user)
    session.add(job)
    session.flush()
    if indices:
        _add_tasks(session, job, spec, indices)
    if data.versions:
        tasks_of = select(Job).where(Job.array_id == job.id) if indices else None
        for each in [job] if tasks_of is None else list(session.scalars(tasks_of)):
            link_job(session, each, data)
    return job


def _placed(
    session: Session,
    actor: User,
    catalog: Catalog,
    spec: JobSpec,
    job: Job,
    data: JobData,
    connected: set[str],
    now: dt.datetime,
    single_user: SingleUser | None,
) -> JobSpec:
    """Check that the job can run on some connected partition under an allocation of its
    project with its worst case left; returns its spec, narrowed to the factories the
    sign-in is strong enough for (and `job.spec` with it)."""
    indices = spec.array_indices
    probe = as_sched_job(job, spec, job.project.organisation.country, data)
    parts = [p for p in partitions_of(catalog, connected) if _fits(probe, p)]
    if not parts:
        reason = no_candidate_reason(probe, tuple(partitions_of(catalog, connected)))
        free = as_sched_job(job, spec, job.project.organisation.country)
        if data.label is not None and any(
            _fits(free, p) for p in partitions_of(catalog, connected)
        ):  # it could run, but not where its data may go
            if data.label not in reason:
                where = ", ".join(sorted(data.countries or ())) or "no country"
                reason += f" (the {data.label} keeps it to {where})"
            raise InvalidInput(f"the job cannot run anywhere: {reason}", field="datasets")
        raise InvalidInput(f"the job cannot run anywhere: {reason}", field="resources")
    blocked = {p.factory for p in parts} & actor.lacks_mfa_for
    if blocked:  # never placed where the sign-in is not strong enough (catalog require_mfa)
        parts = [p for p in parts if p.factory not in blocked]
        if not parts:
            raise mfa_refusal(min(blocked), "run jobs there")
        spec = _placed_outside(spec, catalog, actor.lacks_mfa_for)
        job.spec = _task_spec(spec, indices[0]) if indices else spec.model_dump_json()
        probe = as_sched_job(job, spec, job.project.organisation.country)
    tasks = max(len(indices), 1)
    _check_allocations(session, job.project, probe, parts, now, tasks=tasks)
    if single_user is not None:
        _check_single_user(session, single_user, actor, job.project, probe, parts, now)
    return spec


def _placed_outside(spec: JobSpec, catalog: Catalog, excluded: frozenset[str]) -> JobSpec:
    """The spec with its allowed factories narrowed to leave out `excluded`."""
    allowed = spec.placement.factories or tuple(f.id for f in catalog.factories)
    kept = tuple(f for f in allowed if f not in excluded)
    return spec.model_copy(
        update={"placement": spec.placement.model_copy(update={"factories": kept})}
    )


def _task_spec(spec: JobSpec, index: int) -> str:
    """The spec one task of an array runs: the array's, with its index in the environment
    and no `array` of its own."""
    data = spec.model_dump(mode="json")
    data["array"] = None
    data["env"] = {**data["env"], INDEX_VARIABLE: str(index)}
    return json.dumps(data, separators=(",", ":"))


def _add_tasks(session: Session, first: Job, spec: JobSpec, indices: tuple[int, ...]) -> None:
    """The array's other tasks, in one bulk insert; every task points at the first."""
    first.array_id = first.id
    template = spec.model_dump(mode="json")
    template["array"] = None
    env = template["env"]
    common: dict[str, Any] = {
        "project_pk": first.project_pk,
        "user_id": first.user_id,
        "name": first.name,
        "state": first.state,
        "gpus": first.gpus,
        "nodes": first.nodes,
        "gpu_model": first.gpu_model,
        "time_limit_s": first.time_limit_s,
        "workdir_archive": first.workdir_archive,
        "submitted_at": first.submitted_at,
        "reserved_gpu_hours": 0.0,
        "cancel_requested": False,
        "array_id": first.id,
    }
    rows = []
    for index in indices[1:]:
        template["env"] = {**env, INDEX_VARIABLE: str(index)}
        spec_json = json.dumps(template, separators=(",", ":"))
        rows.append({**common, "spec": spec_json, "array_index": index})
    if rows:
        session.execute(insert(Job), rows)


@cache
def _member_project_query() -> Select[Project]:
    """A project by id, with its organisation, when the user is a member. Built once (every
    submission runs it): SQLAlchemy then skips building the statement and its cache key."""
    member = Project.pk.in_(member_project_pks(bindparam("user_id")))
    by_id = Project.id == bindparam("project_id")
    return select(Project).options(joinedload(Project.organisation)).where(by_id, member)


@cache
def _live_allocations_query() -> Select[Allocation]:
    """The allocations of a project in force now (built once, as above)."""
    return in_force(bindparam("now")).where(Allocation.project_pk == bindparam("project_pk"))


def _project(session: Session, actor: User, project_id: str | None) -> Project:
    """The named project, or, when none is named, the one project the user belongs to."""
    if project_id:
        # a member's submission (the usual case): the project and its organisation in one
        # round trip; anything else (staff, not a member, no such project) below
        values = {"project_id": project_id, "user_id": actor.id}
        member_of = session.scalar(_member_project_query(), values)
        if member_of is not None:
            return member_of
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
    *,
    tasks: int = 1,
) -> None:
    """Some eligible allocation has left the worst case of `tasks` such jobs."""
    values = {"now": now, "project_pk": project.pk}
    live = list(session.scalars(_live_allocations_query(), values))
    best: tuple[float, float, str] | None = None
    for part in parts:
        worst = charge(part, job) * tasks
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
    times = f"{tasks:,} tasks x " if tasks > 1 else ""
    raise InvalidInput(
        f"the job's worst case is {worst:,.2f} GPU-hours ({times}{job.gpus} GPUs x "
        f"{job.time_limit / 3600:,.2f} h); the most any eligible allocation has left is "
        f"{left:,.2f} (on {factory})",
        field="array" if tasks > 1 else "resources",
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


def submit_batch(
    session: Session,
    actor: User,
    catalog: Catalog,
    batch: list[tuple[JobSpec, str | None]],
    *,
    connected: set[str],
    now: dt.datetime,
    single_user: SingleUser | None = None,
    recheck: Callable[[], set[str]] | None = None,
) -> list[Job]:
    """Queue several jobs (without workdirs), each checked as if submitted alone; the first
    refusal names its place in the batch (`jobs.N.field`). The caller commits all or none."""
    queued = []
    for n, (spec, project_id) in enumerate(batch):
        try:
            job = submit(
                session,
                actor,
                catalog,
                spec,
                project_id=project_id,
                connected=connected,
                workdir_archive=None,
                now=now,
                single_user=single_user,
                recheck=recheck,
            )
        except (InvalidInput, Forbidden, NotFound) as exc:
            if exc.field is None:
                raise type(exc)(f"job {n} of the batch: {exc.message}") from exc
            raise type(exc)(exc.message, field=f"jobs.{n}.{exc.field}") from exc
        queued.append(job)
    return queued


def list_jobs(
    session: Session,
    actor: User,
    *,
    project_id: str | None = None,
    array_id: int | None = None,
    limit: int = 200,
) -> list[Job]:
    """Jobs the actor may see, newest first; with `array_id`, that array's tasks (all of
    them, up to its size) in index order."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if array_id is not None:
        query = (
            select(Job).where(Job.array_id == array_id).order_by(Job.array_index).limit(MAX_TASKS)
        )
    if project_id is not None:
        query = query.where(Job.project_pk == visible_project(session, actor, project_id).pk)
    query = query.where(job_filter(actor))
    return list(session.scalars(query))


def cancel(session: Session, actor: User, job_id: int, *, now: dt.datetime) -> Job:
    """A queued job is cancelled at once; a dispatched or running one is stopped by the
    control loop on its next round."""
    job = get_job(session, actor, job_id)
    if JobState(job.state).finished:
        raise Conflict(f"job {job.id} has already ended ({job.state})", field="state")
    _stop(job, now)
    return job


def _stop(job: Job, now: dt.datetime) -> bool:
    """Stop an unfinished job: a queued one is cancelled at once (True); a dispatched or
    running one is asked to stop, which the control loop does on its next round."""
    if JobState(job.state) is JobState.QUEUED:
        job.state, job.ended_at, job.reason = JobState.CANCELLED.value, now, "cancelled"
        return True
    job.cancel_requested = True
    return False


def cancel_array(
    session: Session, actor: User, job_id: int, *, now: dt.datetime
) -> tuple[int, int, int]:
    """Cancel every unfinished task of the array `job_id` belongs to: (the array's id,
    queued tasks cancelled, running ones asked to stop)."""
    job = get_job(session, actor, job_id)
    if job.array_id is None:
        raise Conflict(f"job {job.id} is not a task of an array", field="job_id")
    tasks = session.scalars(
        select(Job).where(Job.array_id == job.array_id, job_filter(actor)).order_by(Job.id)
    )
    cancelled = stopping = 0
    for task in tasks:
        state = JobState(task.state)
        if state.finished or (task.cancel_requested and state is not JobState.QUEUED):
            continue  # ended, or already asked to stop
        if _stop(task, now):
            cancelled += 1
        else:
            stopping += 1
    return job.array_id, cancelled, stopping
