"""Site agents, central side: factory tokens, site usernames, the sync an agent runs and
the site accounts its factory should hold.

An agent connects out to the API with a factory token. Each sync it reports its capacity
and the state of every run it holds; the answer lists the jobs placed on its factory that
it does not hold yet (to launch: launching is idempotent per job) and the runs to cancel
(cancel requested, or the job is no longer the factory's). Every run the agent reports has
its lease renewed; a job whose lease runs out is lost and queued again, and if it shows up
at the old factory afterwards the agent is told to cancel it. The control loop sees a
factory through `AgentLink` (backends/agent_link.py), an `Executor` whose answers come
from what the agent reported.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.backends.agent_link import DEFAULT_LEASE, STALE_SHARE_OF_LEASE, AgentLink
from fabbrica.backends.agent_link import OFFERS as OFFERS  # where a held sync waits for work
from fabbrica.catalog.model import Catalog
from fabbrica.core.access import AllocationState
from fabbrica.core.agent_api import SiteAccount, SyncAnswer, SyncReport, site_account
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.executor import (
    Capacity,
    LaunchRequest,
    RunState,
)
from fabbrica.core.identity import Role
from fabbrica.core.jobs import JobState, job_id_of, run_tag
from fabbrica.services import checkpoints, tracking
from fabbrica.services.access.visibility import in_operated, require_operator_of, require_staff
from fabbrica.services.dataset_staging import agent_mounts
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.services.identity import issue_token
from fabbrica.services.run_status import (
    apply_status,
    charged_already,
    is_stale,
    launch_request,
    settle_lost_run,
)
from fabbrica.store.db import Database
from fabbrica.store.models import Agent, Allocation, Job, ProjectMember, SiteUsername, User

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
ACTIVE = (JobState.DISPATCHED.value, JobState.RUNNING.value)


def agent_email(factory_id: str) -> str:
    return f"agent.{factory_id}@localhost"


def create_agent_token(
    session: Session, catalog: Catalog, actor: User, factory_id: str, *, now: dt.datetime
) -> tuple[User, str]:
    """A token for `factory_id`'s agent (its agent user is made on first use): an admin,
    or an operator of the factory."""
    require_staff(actor, "manage site agents")
    if catalog.factory(factory_id) is None:
        raise NotFound(f"no factory {factory_id!r} in the catalog", field="factory")
    require_operator_of(session, actor, factory_id, "manage site agents")
    user = ensure_agent(session, factory_id, now=now)
    _, secret = issue_token(session, user, name=f"agent {factory_id}", now=now)
    return user, secret


def ensure_agent(session: Session, factory_id: str, *, now: dt.datetime) -> User:
    """The agent user of a factory, and its agent row, made on first use."""
    agent = session.get(Agent, factory_id)
    if agent is not None:
        return session.get_one(User, agent.user_id)
    user = session.scalar(select(User).where(User.email == agent_email(factory_id)))
    if user is None:
        user = User(
            email=agent_email(factory_id),
            name=f"site agent of {factory_id}",
            role=Role.AGENT.value,
            factory_id=factory_id,
            active=True,
            created_at=now,
        )
        session.add(user)
        session.flush()
    session.add(Agent(factory_id=factory_id, user_id=user.id, capabilities="[]", capacity="[]"))
    session.flush()
    return user


def set_site_username(
    session: Session, actor: User, factory_id: str, email: str, username: str
) -> SiteUsername:
    """Map a Fabbrica user to their username at a factory (jobs run as it there): an
    admin, or an operator of the factory."""
    require_operator_of(session, actor, factory_id, "manage site agents")
    if not USERNAME.match(username):
        raise InvalidInput(
            f"{username!r} is not a site username (lower case, digits, _ . -)", field="username"
        )
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user {email!r}", field="email")
    taken = session.scalar(
        select(SiteUsername).where(
            SiteUsername.factory_id == factory_id, SiteUsername.username == username
        )
    )
    if taken is not None and taken.user_id != user.id:
        raise Conflict(f"{username} is already mapped at {factory_id}", field="username")
    row = session.scalar(
        select(SiteUsername).where(
            SiteUsername.factory_id == factory_id, SiteUsername.user_id == user.id
        )
    )
    if row is None:
        row = SiteUsername(factory_id=factory_id, user_id=user.id, username=username)
        session.add(row)
    row.username = username
    session.flush()
    return row


def list_agents(session: Session, actor: User) -> list[Agent]:
    """Every factory's agent, by factory (admin; an operator: the agents of the factories
    they operate)."""
    require_staff(actor, "manage site agents")
    query = select(Agent).where(in_operated(actor, Agent.factory_id))
    return list(session.scalars(query.order_by(Agent.factory_id)))


def factory_of(actor: User) -> str:
    if actor.role != Role.AGENT.value or not actor.factory_id:
        raise Forbidden("only a site agent may do this")
    return actor.factory_id


# --- the sync -----------------------------------------------------------------------------


def held_wait(asked: float, most: float, lease: dt.timedelta) -> float:
    """How long the API holds a sync that asks to wait `asked` seconds for work: at most
    `most` (FABBRICA_AGENT_WAIT_SECONDS), and at most half the time after which an agent's
    capacity is stale (an agent held longer would look gone, and get no work)."""
    return max(0.0, min(asked, most, lease.total_seconds() * STALE_SHARE_OF_LEASE / 2))


def sync_as(
    db: Database,
    catalog: Catalog,
    agent_user_id: int,
    report: SyncReport,
    *,
    now: dt.datetime,
    lease: dt.timedelta = DEFAULT_LEASE,
    server_url: str | None = None,
    files: Path | None = None,
) -> SyncAnswer:
    """`sync` in a transaction of its own, committed when it returns (a held sync keeps no
    transaction, and no connection, while it waits)."""
    with db.session() as session:
        actor = session.get_one(User, agent_user_id)
        return sync(
            session,
            catalog,
            actor,
            report,
            now=now,
            lease=lease,
            server_url=server_url,
            files=files,
        )


def sync(
    session: Session,
    catalog: Catalog,
    actor: User,
    report: SyncReport,
    *,
    now: dt.datetime,
    lease: dt.timedelta = DEFAULT_LEASE,
    server_url: str | None = None,
    files: Path | None = None,
) -> SyncAnswer:
    """`server_url`: where the factory's jobs reach this server (their MLflow tracking URI
    is under it); None: the jobs get no tracking URI. `files`: where the server keeps job
    files (the checkpoints a run starts from)."""
    factory = factory_of(actor)
    agent = session.get(Agent, factory, with_for_update=True)
    if agent is None:
        raise NotFound(f"no agent registered for {factory}", field="factory")
    agent.backend = report.backend
    agent.capabilities = json.dumps(sorted(set(report.capabilities)))
    agent.capacity = json.dumps([_capacity_json(c) for c in report.capacity])
    agent.last_seen_at = now
    cancel: list[str] = []
    held: set[int] = set()
    for status in report.runs:
        job_id = job_id_of(status.run_tag)
        job = session.get(Job, job_id, with_for_update=True) if job_id is not None else None
        # the run it had before it was lost or timed out (placed here again, it runs anew)
        stale = job is not None and is_stale(job, factory, status.site_job_id)
        if job is not None and status.state.finished and status.site_job_id and not stale:
            stale = charged_already(session, job, factory, status.site_job_id)  # timed out
        if job is not None and status.state.finished and status.site_job_id:
            settle_lost_run(session, catalog, job, factory, status, now)
        if job is None or job.factory_id != factory or job.state not in ACTIVE or stale:
            if not status.state.finished:
                cancel.append(status.run_tag)  # not this factory's (any more): stop it
            continue
        held.add(job.id)
        if job.cancel_requested and not status.state.finished:
            cancel.append(status.run_tag)
        if status.state in (RunState.UNKNOWN, RunState.LOST):
            held.discard(job.id)  # the agent lost it before it ran: offer it again
            continue
        job.lease_until = now + lease
        apply_status(session, catalog, job, status, now)
    launch = []
    waiting = session.scalars(
        select(Job)
        .where(Job.factory_id == factory, Job.state == JobState.DISPATCHED.value)
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    )
    for job in waiting:
        if job.id in held:
            continue
        if job.cancel_requested:
            continue  # the control loop cancels it through the link
        job.lease_until = now + lease
        launch.append(_launch(session, job, factory, server_url, now, files))
    return SyncAnswer(factory, lease.total_seconds(), launch, cancel)


def _launch(
    session: Session,
    job: Job,
    factory: str,
    server_url: str | None,
    now: dt.datetime,
    files: Path | None,
) -> LaunchRequest:
    """The job as the agent launches it: its account, the member's site username, the
    workdir and the last checkpoint (as API paths the agent downloads), and its MLflow
    tracking URI and token."""
    username = session.scalar(
        select(SiteUsername.username).where(
            SiteUsername.factory_id == factory, SiteUsername.user_id == job.user_id
        )
    )
    request = launch_request(job)
    kept = checkpoints.stored(files, job.id) if request.checkpoint is not None else None
    if request.checkpoint is not None and kept is not None:
        archive = f"/api/v1/agent/jobs/{job.id}/checkpoint"
        request = replace(
            request, checkpoint=replace(request.checkpoint, archive=archive, sha256=kept.sha256)
        )
    return replace(
        request,
        env={**request.env, **tracking.job_env(session, job, server_url, now)},
        workdir_archive=f"/api/v1/agent/jobs/{job.id}/workdir" if job.workdir_archive else None,
        account=site_account(job.project.id or ""),
        user=username,
        datasets=agent_mounts(session, job.id),
    )


def _capacity_json(c: Capacity) -> dict[str, object]:
    return {
        "partition": c.partition,
        "gpu_model": c.gpu_model,
        "total_gpus": c.total_gpus,
        "free_gpus": c.free_gpus,
        "queued": c.queued,
    }


def write_log(executors: ExecutorRegistry, job: Job, offset: int, data: bytes) -> int:
    """Write the part of the job's log an agent sent from byte `offset` (a retry of the
    same part rewrites it) where the server reads the job's log; the log's size after it.
    Conflict when `offset` is past what the server has."""
    link = executors.get(job.factory_id or "")
    if not isinstance(link, AgentLink):
        raise NotFound(f"job {job.id} is not run by an agent", field="job_id")
    directory = link.job_dir(run_tag(job.id))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "log"
    size = path.stat().st_size if path.exists() else 0
    if offset > size:
        raise Conflict(f"the server has {size} bytes of this log; send from there", "offset")
    with path.open("r+b" if path.exists() else "wb") as log:
        log.seek(offset)
        log.write(data)
        log.truncate()
        return log.tell()


def agent_job(session: Session, actor: User, job_id: int) -> Job:
    """A job of the agent's factory (404 for any other: agents see only their own)."""
    factory = factory_of(actor)
    job = session.get(Job, job_id)
    if job is None or job.factory_id != factory:
        raise NotFound(f"no job {job_id} at {factory}", field="job_id")
    return job


# --- accounts -----------------------------------------------------------------------------


def desired_accounts(session: Session, actor: User, now: dt.datetime) -> list[SiteAccount]:
    """Accounts for every allocation at the factory that is active or suspended now."""
    factory = factory_of(actor)
    rows = session.scalars(
        select(Allocation)
        .where(
            Allocation.factory_id == factory,
            Allocation.state.in_([AllocationState.ACTIVE.value, AllocationState.SUSPENDED.value]),
            Allocation.valid_from <= now,
            Allocation.valid_until > now,
        )
        .order_by(Allocation.id)
    )
    by_account: dict[str, SiteAccount] = {}
    for allocation in rows:
        project = allocation.project
        account = site_account(project.id or "")
        members = session.scalars(
            select(SiteUsername.username)
            .join(ProjectMember, ProjectMember.user_id == SiteUsername.user_id)
            .where(ProjectMember.project_pk == project.pk, SiteUsername.factory_id == factory)
            .order_by(SiteUsername.username)
        )
        minutes = int(allocation.granted_gpu_hours * 60)
        state = allocation.state
        earlier = by_account.get(account)
        if earlier is not None:  # two allocations of one project: their grants add up
            minutes += earlier.gpu_minutes
            state = "active" if "active" in (state, earlier.state) else state
        by_account[account] = SiteAccount(account, project.id or "", state, minutes, tuple(members))
    return list(by_account.values())
