"""Notebooks: start one (a job made by core.notebooks), list a member's, and find where a
running one listens so the proxy can reach it. Only the member who started a notebook
reaches it; for anyone else it does not exist (NotFound)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.backends.agent_link import AgentLink
from fabbrica.backends.notebook import STATUS_FILE, read_connection, read_untrusted_json
from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import InvalidInput, NotFound, Unavailable
from fabbrica.core.jobs import JobState
from fabbrica.core.jobspec import SpecError
from fabbrica.core.notebooks import (
    LAUNCHER,
    NOTEBOOK_NAME,
    WARN_S,
    NotebookRequest,
    notebook_spec,
    proxy_path,
)
from fabbrica.services import job_files, jobs
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.services.single_user import SingleUser
from fabbrica.store.models import Job, User

READY, STARTING, RECONNECTING = "ready", "starting", "reconnecting"
# the spec's fields as a member names them (`--gpus`, `--hours`, `--factory`)
_FIELDS = {"resources.gpus": "gpus", "resources.time_limit": "hours"}


@dataclass(frozen=True)
class Ending:
    """When a running notebook ends if nothing changes, and why: `idle` (no client open,
    nothing happening) or `time_limit`; `soon` within WARN_S of it (the member is warned)."""

    at: dt.datetime
    why: str
    soon: bool


@dataclass(frozen=True)
class Endpoint:
    """Where a running notebook listens, on the machine that runs it, and its token."""

    port: int
    token: str
    base_url: str


@dataclass(frozen=True)
class Remote:
    """A running notebook at a site whose agent carries its traffic (its notebook tunnel):
    where it listens and its token stay at the site."""

    factory: str
    job_id: int


class Tunnels(Protocol):
    """What the site agents' notebook tunnels say (api.tunnels.TunnelHub)."""

    def connected(self, factory: str) -> bool:
        """Whether the factory's agent holds its tunnel open now."""
        ...

    def ready(self, factory: str, job_id: int) -> bool:
        """Whether the factory's agent says that notebook answers now."""
        ...


def start(
    session: Session,
    actor: User,
    catalog: Catalog,
    request: NotebookRequest,
    *,
    idle_s: int,
    connected: set[str],
    single_user: SingleUser,
    now: dt.datetime,
) -> Job:
    """Queue a notebook job; placed and charged like any job. The caller commits."""
    try:
        spec = notebook_spec(request, idle_s)
    except SpecError as exc:
        raise InvalidInput(exc.message, _field(exc.field)) from exc
    try:
        return jobs.submit(
            session,
            actor,
            catalog,
            spec,
            project_id=request.project,
            connected=connected,
            workdir_archive=None,
            now=now,
            single_user=single_user,
        )
    except (InvalidInput, NotFound) as exc:
        raise type(exc)(exc.message, _field(exc.field)) from exc


def _field(field: str | None) -> str | None:
    """A spec's field as the member named it (`--gpus`, `--hours`, `--factory`)."""
    if field is None:
        return None
    if field.startswith("placement"):
        return "factory"
    return _FIELDS.get(field, field.split(".")[0])


def is_notebook_job(job: Job) -> bool:
    try:
        spec = json.loads(job.spec)
    except ValueError:
        return False
    run = spec.get("run") if isinstance(spec, dict) else None
    return job.name == NOTEBOOK_NAME and isinstance(run, str) and f" -m {LAUNCHER} " in run


def get_notebook(session: Session, actor: User, job_id: int) -> Job:
    """The actor's own notebook; NotFound for any other job or anyone else's notebook."""
    job = session.get(Job, job_id)
    if job is None or job.user_id != actor.id or not is_notebook_job(job):
        raise NotFound(f"no notebook {job_id}", field="job_id")
    return job


def list_notebooks(session: Session, actor: User, *, limit: int = 100) -> list[Job]:
    """The actor's notebooks, newest first."""
    query = (
        select(Job)
        .where(Job.user_id == actor.id, Job.name == NOTEBOOK_NAME)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return [job for job in session.scalars(query) if is_notebook_job(job)]


def url_of(job: Job) -> str:
    return f"{proxy_path(job.id)}lab"


def state_of(executors: ExecutorRegistry, job: Job, tunnels: Tunnels) -> str:
    """`starting` until JupyterLab answers (at a site: until its agent says so), then
    `ready`; `reconnecting` while it runs at a site whose agent's tunnel is down; an ended
    notebook's job state."""
    state = JobState(job.state)
    if state.finished:
        return state.value
    if state is not JobState.RUNNING:
        return STARTING
    if _at_site(executors, job):
        factory = job.factory_id or ""
        if not tunnels.connected(factory):
            return RECONNECTING
        return READY if tunnels.ready(factory, job.id) else STARTING
    return READY if endpoint(executors, job) is not None else STARTING


def _at_site(executors: ExecutorRegistry, job: Job) -> bool:
    """Whether the job runs at a factory of a site agent (its files stay at the site)."""
    link = executors.get(job.factory_id or "")
    return isinstance(link, AgentLink) and link.job_dirs is None  # not an in-process agent


def ending(executors: ExecutorRegistry, job: Job, now: dt.datetime) -> Ending | None:
    """The sooner of the time limit's end and the idle end the launcher last saw (none
    while a client is connected); None for a notebook that does not run."""
    if job.state != JobState.RUNNING.value or job.started_at is None:
        return None
    at, why = job.started_at + dt.timedelta(seconds=job.time_limit_s), "time_limit"
    try:
        idle = _read_idle_end(job_files.job_dir(executors, job))
    except NotFound:
        idle = None
    if idle is not None and idle < at:
        at, why = idle, "idle"
    return Ending(at, why, (at - now).total_seconds() <= WARN_S)


def _read_idle_end(job_dir: Path) -> dt.datetime | None:
    """When the launcher last saw the notebook ending if left idle (`status.json`)."""
    data, _ = read_untrusted_json(job_dir, STATUS_FILE)
    value = data.get("idle_ends_at") if isinstance(data, dict) else None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def endpoint(executors: ExecutorRegistry, job: Job) -> Endpoint | None:
    """Where the running notebook listens, from the file its launcher wrote once JupyterLab
    answered; None until then (or when the job runs where this server keeps no files)."""
    if job.state != JobState.RUNNING.value:
        return None
    try:
        directory = job_files.job_dir(executors, job)
    except NotFound:
        return None
    return _read_connection(directory, proxy_path(job.id))


def find_endpoint(
    session: Session, actor: User, executors: ExecutorRegistry, job_id: int
) -> Endpoint | Remote:
    """The endpoint of the actor's notebook (Remote for one at a site agent's factory):
    NotFound when it is not theirs or has ended, Unavailable while it starts."""
    job = get_notebook(session, actor, job_id)
    if JobState(job.state).finished:
        raise NotFound(f"notebook {job_id} has ended ({job.state})", field="job_id")
    if job.state == JobState.RUNNING.value and _at_site(executors, job):
        return Remote(job.factory_id or "", job.id)
    found = endpoint(executors, job)
    if found is None:
        raise Unavailable(f"notebook {job_id} is starting ({job.state}); try again shortly")
    return found


def _read_connection(job_dir: Path, base_url: str) -> Endpoint | None:
    """Where the launcher says JupyterLab listens, checked: on this machine's loopback."""
    found = read_connection(job_dir, base_url)
    if found is None or not found.loopback:
        return None
    return Endpoint(found.port, found.token, base_url)  # the base URL is ours, never the file's
