"""Site agents, central side: factory tokens, the sync an agent runs, and the proxy the
control loop drives in place of a factory's executor.

An agent connects out to the API with a factory token. Each sync it reports its capacity
and the state of every run it holds; the answer lists the jobs placed on its factory that
it does not hold yet (to launch: launching is idempotent per job) and the runs to cancel
(cancel requested, or the job is no longer the factory's). Every run the agent reports has
its lease renewed; a job whose lease runs out is lost and queued again, and if it shows up
at the old factory afterwards the agent is told to cancel it. The control loop sees a
factory through `AgentLink`, an `Executor` whose answers come from what the agent
reported.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.backends.protocol import (
    Capability,
    Capacity,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)
from fabbrica.catalog.model import Catalog
from fabbrica.core.access import AllocationState
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.identity import Role
from fabbrica.core.jobs import JobState, job_id_of
from fabbrica.services.access.visibility import require_operator_of, require_staff
from fabbrica.services.identity import issue_token
from fabbrica.services.run_status import apply_status, launch_request
from fabbrica.store.db import Database
from fabbrica.store.models import Agent, Allocation, Job, ProjectMember, SiteUsername, User

DEFAULT_LEASE = dt.timedelta(seconds=60)
STALE_AFTER = dt.timedelta(seconds=30)  # capacity older than this is not used for placement
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
ACTIVE = (JobState.DISPATCHED.value, JobState.RUNNING.value)


def agent_email(factory_id: str) -> str:
    return f"agent.{factory_id}@localhost"


def slurm_account(project_id: str) -> str:
    """The site account of a project: its id in lower case (Slurm lowers account names)."""
    return project_id.lower()


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


def factory_of(actor: User) -> str:
    if actor.role != Role.AGENT.value or not actor.factory_id:
        raise Forbidden("only a site agent may do this")
    return actor.factory_id


# --- the sync -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    backend: str
    capabilities: Sequence[str]
    capacity: Sequence[Capacity]
    runs: Sequence[RunStatus]


@dataclass(frozen=True)
class SyncAnswer:
    lease_seconds: float
    launch: list[LaunchRequest]
    cancel: list[str]


def sync(
    session: Session,
    catalog: Catalog,
    actor: User,
    report: Report,
    *,
    now: dt.datetime,
    lease: dt.timedelta = DEFAULT_LEASE,
) -> SyncAnswer:
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
        job_id = job_id_of(status.job_id)
        job = session.get(Job, job_id, with_for_update=True) if job_id is not None else None
        stale = status.site_job_id is not None and status.site_job_id == (
            job.lost_site_job_id if job is not None else None
        )  # the run it had before it was lost (placed here again, it runs anew)
        if job is None or job.factory_id != factory or job.state not in ACTIVE or stale:
            if not status.state.finished:
                cancel.append(status.job_id)  # not this factory's (any more): stop it
            continue
        held.add(job.id)
        if job.cancel_requested and not status.state.finished:
            cancel.append(status.job_id)
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
        launch.append(_launch(session, job, factory))
    return SyncAnswer(lease.total_seconds(), launch, cancel)


def _launch(session: Session, job: Job, factory: str) -> LaunchRequest:
    """The job as the agent launches it: its account, the member's site username, and the
    workdir as an API path the agent downloads."""
    username = session.scalar(
        select(SiteUsername.username).where(
            SiteUsername.factory_id == factory, SiteUsername.user_id == job.user_id
        )
    )
    return replace(
        launch_request(job),
        workdir_archive=f"/api/v1/agent/jobs/{job.id}/workdir" if job.workdir_archive else None,
        account=slurm_account(job.project.id or ""),
        user=username,
    )


def _capacity_json(c: Capacity) -> dict[str, object]:
    return {
        "partition": c.partition,
        "gpu_model": c.gpu_model,
        "total_gpus": c.total_gpus,
        "free_gpus": c.free_gpus,
        "queued": c.queued,
    }


def agent_job(session: Session, actor: User, job_id: int) -> Job:
    """A job of the agent's factory (404 for any other: agents see only their own)."""
    factory = factory_of(actor)
    job = session.get(Job, job_id)
    if job is None or job.factory_id != factory:
        raise NotFound(f"no job {job_id} at {factory}", field="job_id")
    return job


# --- accounts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountWant:
    """What Slurm should hold for one project at the factory."""

    account: str
    project: str
    state: str  # active | suspended
    gpu_minutes: int  # GrpTRESMins=gres/gpu=...: the grant, in GPU-minutes
    users: tuple[str, ...]  # site usernames of the members who have one


def desired_accounts(session: Session, actor: User, now: dt.datetime) -> list[AccountWant]:
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
    by_account: dict[str, AccountWant] = {}
    for allocation in rows:
        project = allocation.project
        account = slurm_account(project.id or "")
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
        by_account[account] = AccountWant(account, project.id or "", state, minutes, tuple(members))
    return list(by_account.values())


# --- the control loop's view of a factory --------------------------------------------------


class AgentLink:
    """An `Executor` for a factory run by a site agent: reads what the agent reported.

    Its calls only read (the control loop calls them while it holds its own transaction,
    and on SQLite a second writer would wait for it): a job's lease starts when it is
    dispatched and is renewed by the agent's syncs."""

    def __init__(
        self,
        db: Database,
        factory_id: str,
        clock: Callable[[], dt.datetime],
        files: Path | None = None,
        stale_after: dt.timedelta = STALE_AFTER,
        lease: dt.timedelta = DEFAULT_LEASE,
        job_dirs: Callable[[str], Path] | None = None,
    ) -> None:
        self.db = db
        self.factory_id = factory_id
        self.name = f"agent {factory_id}"
        self.clock = clock
        self.files = files
        self.stale_after = stale_after
        self.lease = lease
        self.job_dirs = job_dirs  # an in-process agent's executor keeps the files here

    def _agent(self, session: Session) -> Agent | None:
        return session.get(Agent, self.factory_id)

    def capabilities(self) -> frozenset[Capability]:
        with self.db.read_session() as session:
            agent = self._agent(session)
            names = json.loads(agent.capabilities) if agent else []
        return frozenset(Capability(n) for n in names if n in Capability._value2member_map_)

    def capacity(self) -> list[Capacity]:
        """What the agent last reported, unless it has gone quiet (then nothing: no job is
        placed on a factory whose agent does not answer)."""
        with self.db.read_session() as session:
            agent = self._agent(session)
            if agent is None or agent.last_seen_at is None:
                return []
            if self.clock() - agent.last_seen_at > self.stale_after:
                return []
            return [Capacity(**c) for c in json.loads(agent.capacity)]

    def submit(self, request: LaunchRequest) -> RunStatus:
        """Nothing to do: the job waits for the agent's next sync to take it."""
        return RunStatus(request.job_id, RunState.PENDING)

    def poll(self, job_ids: list[str]) -> list[RunStatus]:
        now = self.clock()
        found = []
        with self.db.read_session() as session:
            for tag in job_ids:
                job_id = job_id_of(tag)
                job = session.get(Job, job_id) if job_id is not None else None
                if job is None:
                    found.append(RunStatus(tag, RunState.UNKNOWN))
                    continue
                since = job.dispatched_at or now
                expiry = job.lease_until or since + self.lease
                if expiry < now:
                    found.append(RunStatus(tag, RunState.LOST, reason="the agent's lease ran out"))
                elif job.state == JobState.RUNNING.value:
                    found.append(RunStatus(tag, RunState.RUNNING, started_at=job.started_at))
                else:
                    found.append(RunStatus(tag, RunState.PENDING))
        return found

    def cancel(self, job_id: str) -> RunStatus:
        """A job the agent has not submitted yet (no site id) is cancelled here and now;
        otherwise the agent cancels it at its next sync (the job is marked)."""
        tag_id = job_id_of(job_id)
        with self.db.read_session() as session:
            job = session.get(Job, tag_id) if tag_id is not None else None
            if job is not None and job.state == JobState.DISPATCHED.value and not job.site_job_id:
                return RunStatus(job_id, RunState.CANCELLED, reason="cancelled before it started")
        return self.poll([job_id])[0]

    def usage(self, job_ids: list[str]) -> list[UsageSample]:
        return []

    def adopt(self) -> list[RunStatus]:
        return []

    def job_dir(self, tag: str) -> Path:
        """Where the agent's uploads of a job's log and outputs are kept on this server."""
        if self.job_dirs is not None:
            return self.job_dirs(tag)
        if self.files is None:
            raise NotFound("this server keeps no files of agents' jobs", field="job_id")
        return self.files / "agents" / self.factory_id / tag
