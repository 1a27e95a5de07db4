"""Site agents: factory tokens and site usernames (staff), and the agent's own calls:
sync, accounts, a job's workdir and log."""

from __future__ import annotations

import json
import time
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.limits import slot_released
from fabbrica.api.params import MAX_ID
from fabbrica.api.schemas_agents import (
    AccountOut,
    AgentPublic,
    AgentTokenPublic,
    CapacityIn,
    CheckpointOut,
    DataMountOut,
    LaunchOut,
    SiteUsernamePublic,
    SiteUsernameSet,
    SyncIn,
    SyncOut,
)
from fabbrica.core.agent_api import SyncAnswer, SyncReport
from fabbrica.core.errors import Conflict, NotFound
from fabbrica.core.executor import Capacity, RunStatus
from fabbrica.core.text import SLUG_PATTERN
from fabbrica.services import agents, checkpoints, dataset_staging
from fabbrica.services.dataset_store import object_path

router = APIRouter(tags=["agents"])
FactoryId = Annotated[str, Path(pattern=SLUG_PATTERN)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
LOG_CHUNK_MAX = 512 * 1024  # under the request body limit


@router.post("/agents/{factory_id}/token", status_code=201)
def create_agent_token(
    factory_id: FactoryId,
    ctx: ContextDep,
    session: SessionDep,
    catalog: CatalogDep,
    actor: CurrentUser,
) -> AgentTokenPublic:
    """A new token for the factory's site agent (admin or operator). Shown once."""
    user, secret = agents.create_agent_token(session, catalog, actor, factory_id, now=ctx.clock())
    return AgentTokenPublic(factory=factory_id, user_id=user.id, token=secret)


@router.get("/agents")
def list_agents(session: SessionDep, actor: CurrentUser) -> list[AgentPublic]:
    """Every factory's agent: backend, last heartbeat, capacity (admin; an operator: the
    agents of the factories they operate)."""
    return [
        AgentPublic(
            factory=a.factory_id,
            backend=a.backend,
            last_seen_at=a.last_seen_at,
            capabilities=json.loads(a.capabilities),
            capacity=[CapacityIn(**c) for c in json.loads(a.capacity)],
        )
        for a in agents.list_agents(session, actor)
    ]


@router.put("/agents/{factory_id}/usernames")
def set_site_username(
    factory_id: FactoryId,
    body: SiteUsernameSet,
    session: SessionDep,
    catalog: CatalogDep,
    actor: CurrentUser,
) -> SiteUsernamePublic:
    """Map a user to their username at the factory (admin or operator)."""
    if catalog.factory(factory_id) is None:
        raise NotFound(f"no factory {factory_id!r} in the catalog", field="factory_id")
    row = agents.set_site_username(session, actor, factory_id, body.email, body.username)
    return SiteUsernamePublic(factory=factory_id, email=body.email.lower(), username=row.username)


@router.post("/agent/sync")
async def agent_sync(
    request: Request,
    body: SyncIn,
    ctx: ContextDep,
    session: SessionDep,
    catalog: CatalogDep,
    actor: CurrentUser,
) -> SyncOut:
    """The agent's heartbeat: capacity and the runs it holds in; jobs to launch and runs
    to cancel out. With `wait_s`, an answer with nothing to do is held until there is
    (a job placed on the factory, a cancel) or the wait ends; the server caps the wait
    (`wait_s` in the answer). A held sync holds no thread and no database connection."""
    report = SyncReport(
        backend=body.backend,
        capabilities=body.capabilities,
        capacity=[Capacity(**c.model_dump()) for c in body.capacity],
        runs=[RunStatus(**r.model_dump()) for r in body.runs],
    )
    server_url = (ctx.public_url or str(request.base_url)).rstrip("/")
    most = agents.held_wait(ctx.agent_wait_s, ctx.agent_wait_s, ctx.agent_lease)

    def sync() -> SyncAnswer:  # off the event loop, each in a transaction of its own
        return agents.sync_as(
            ctx.db,
            catalog,
            actor_id,
            report,
            now=ctx.clock(),
            lease=ctx.agent_lease,
            server_url=server_url,
            files=ctx.files,
        )

    factory, actor_id = agents.factory_of(actor), actor.id
    await run_in_threadpool(session.commit)  # the token's check: its transaction ends here
    deadline = time.monotonic() + agents.held_wait(body.wait_s, most, ctx.agent_lease)
    releases = agents.OFFERS.releases
    since = agents.OFFERS.generation(factory)  # before the sync: no offer falls in between
    answer = await run_in_threadpool(sync)
    while not answer.launch and not answer.cancel:
        left = deadline - time.monotonic()
        async with slot_released(request.scope):  # SQLite's request limit: not while held
            woken = left > 0 and await agents.OFFERS.wait_async(factory, since, left)
        if not woken:
            break
        if agents.OFFERS.releases != releases:
            break
        since = agents.OFFERS.generation(factory)
        answer = await run_in_threadpool(sync)  # the same report again: it is idempotent
    return _sync_out(answer, most)


def _sync_out(answer: SyncAnswer, most: float) -> SyncOut:
    return SyncOut(
        factory=answer.factory,
        lease_seconds=answer.lease_seconds,
        wait_s=most,
        launch=[
            LaunchOut(
                run_tag=r.run_tag,
                run=r.run,
                checkpoint=None
                if r.checkpoint is None
                else CheckpointOut(
                    dir=r.checkpoint.dir,
                    every_s=r.checkpoint.every_s,
                    grace_s=r.checkpoint.grace_s,
                    archive=r.checkpoint.archive,
                    sha256=r.checkpoint.sha256,
                ),
                partition=r.partition,
                gpus=r.gpus,
                nodes=r.nodes,
                time_limit_s=int(r.time_limit.total_seconds()),
                command=r.command,
                env=dict(r.env),
                gpu_model=r.gpu_model,
                workdir_archive=r.workdir_archive,
                account=r.account,
                user=r.user,
                datasets=[
                    DataMountOut(name=m.name, files=list(m.files), version=m.version, size=m.size)
                    for m in r.datasets
                ],
            )
            for r in answer.launch
        ],
        cancel=answer.cancel,
    )


@router.get("/agent/accounts")
def agent_accounts(ctx: ContextDep, session: SessionDep, actor: CurrentUser) -> list[AccountOut]:
    """The site accounts the factory should hold: one per project with an allocation there
    that is active or suspended now, its grant in GPU-minutes and its members' usernames."""
    return [
        AccountOut(
            account=a.account,
            project=a.project,
            state=a.state,
            gpu_minutes=a.gpu_minutes,
            users=list(a.users),
        )
        for a in agents.desired_accounts(session, actor, ctx.clock())
    ]


@router.get("/agent/jobs/{job_id}/workdir", response_class=FileResponse)
def agent_workdir(job_id: JobId, session: SessionDep, actor: CurrentUser) -> FileResponse:
    """The uploaded workdir archive of a job placed on the agent's factory."""
    job = agents.agent_job(session, actor, job_id)
    if not job.workdir_archive or not FsPath(job.workdir_archive).is_file():
        raise NotFound(f"job {job_id} has no workdir archive", field="job_id")
    return FileResponse(job.workdir_archive, media_type="application/x-tar")


@router.get("/agent/jobs/{job_id}/objects/{sha256}", response_class=FileResponse)
def agent_data_object(
    job_id: JobId,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    ctx: ContextDep,
    session: SessionDep,
    catalog: CatalogDep,
    actor: CurrentUser,
) -> FileResponse:
    """The bytes of a data set file a job of the agent's factory reads (by its sha256);
    403 when the data set's residency does not allow the factory."""
    job = agents.agent_job(session, actor, job_id)
    dataset_staging.agent_object(session, catalog, job, sha256)
    if ctx.files is None:
        raise NotFound("this server keeps no files", field="sha256")
    return FileResponse(object_path(ctx.files, sha256), media_type="application/octet-stream")


@router.post("/agent/jobs/{job_id}/log")
async def agent_log(
    job_id: JobId,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    offset: Annotated[int, Query(ge=0, le=2**40)] = 0,
) -> dict[str, int]:
    """Append the next part of a job's log, written from byte `offset` (a retry of the
    same part rewrites it). 409 when `offset` is past what the server has."""
    data = await request.body()

    def work() -> dict[str, int]:  # the database and the file, off the event loop
        job = agents.agent_job(session, actor, job_id)
        if len(data) > LOG_CHUNK_MAX:
            raise Conflict(f"a log part is at most {LOG_CHUNK_MAX} bytes", field="body")
        return {"size": agents.write_log(ctx.executors, job, offset, data)}

    return await run_in_threadpool(work)


@router.post("/agent/jobs/{job_id}/checkpoint")
async def agent_send_checkpoint(
    job_id: JobId,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    *,  # keyword-only: the numbers first, so that a bad one is the field named
    run: Annotated[int, Query(ge=1, le=MAX_ID)],
    size: Annotated[int, Query(ge=1, le=checkpoints.MAX_CHECKPOINT_BYTES)],
    offset: Annotated[int, Query(ge=0, le=checkpoints.MAX_CHECKPOINT_BYTES)] = 0,
    sha256: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> dict[str, int | bool]:
    """Write the next part of a run's checkpoint folder (a tar of `size` bytes whose SHA-256
    is `sha256`) from byte `offset`; once whole and checked it is the job's checkpoint,
    which the next run of the job starts from at any factory. 409 when `run` is not the
    job's current run, `offset` is past what the server has, or the bytes do not match."""
    data = await request.body()

    def work() -> dict[str, int | bool]:  # the database and the file, off the event loop
        job = agents.agent_job(session, actor, job_id)
        if len(data) > LOG_CHUNK_MAX:
            raise Conflict(f"a checkpoint part is at most {LOG_CHUNK_MAX} bytes", field="body")
        received, stored = checkpoints.receive(
            ctx.files, job, run=run, offset=offset, size=size, sha256=sha256, data=data
        )
        return {"received": received, "stored": stored}

    return await run_in_threadpool(work)


@router.get("/agent/jobs/{job_id}/checkpoint", response_class=FileResponse)
def agent_checkpoint(
    job_id: JobId, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> FileResponse:
    """The job's last checkpoint folder (a tar sent by its earlier run, from any factory),
    for its run at the agent's factory; its SHA-256 in `X-Checkpoint-Sha256`."""
    job = agents.agent_job(session, actor, job_id)
    found = checkpoints.stored(ctx.files, job.id)
    if found is None:
        raise NotFound(f"job {job_id} has no checkpoint", field="job_id")
    return FileResponse(
        found.path,
        media_type="application/x-tar",
        headers={"X-Checkpoint-Sha256": found.sha256},
    )
