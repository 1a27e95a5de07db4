"""Notebooks: start one, list yours, follow one until it is ready. Stopping one is
cancelling its job (POST /jobs/{job_id}/cancel); its traffic goes through /notebooks/."""

from __future__ import annotations

from fastapi import APIRouter, Path, status
from sqlalchemy.orm import Session

from fabbrica.api.deps import AppContext, CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import MAX_ID
from fabbrica.api.schemas_notebooks import NotebookCreate, NotebookPublic
from fabbrica.core.notebooks import NotebookRequest
from fabbrica.services import notebooks
from fabbrica.store.models import Job

router = APIRouter(tags=["notebooks"])


def notebook_public(ctx: AppContext, job: Job) -> NotebookPublic:
    ending = notebooks.ending(ctx.executors, job, ctx.clock())
    return NotebookPublic(
        job=job.id,
        url=notebooks.url_of(job),
        state=notebooks.state_of(ctx.executors, job, ctx.tunnels),
        ends_at=ending.at if ending else None,
        ends_because=ending.why if ending else None,
        project=job.project.id or "",
        factory=job.factory_id,
        gpus=job.gpus,
        time_limit_s=job.time_limit_s,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        gpu_hours=job.gpu_hours,
        reason=job.reason,
    )


@router.post("/notebooks", response_model=NotebookPublic, status_code=status.HTTP_201_CREATED)
def start_notebook(
    body: NotebookCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> NotebookPublic:
    """Start a JupyterLab as a job of the project (placed and charged like any job); it
    ends after FABBRICA_NOTEBOOK_IDLE seconds idle or at its time limit (`hours`)."""
    request = NotebookRequest(
        body.project, body.factory, body.gpus, body.hours, tuple(body.datasets)
    )
    job = notebooks.start(
        session,
        actor,
        catalog,
        request,
        idle_s=ctx.notebook_idle_s,
        connected=ctx.executors.connected(session),
        single_user=ctx.single_user,
        now=ctx.clock(),
    )
    shown = notebook_public(ctx, job)
    session.commit()
    ctx.wake()
    return shown


@router.get("/notebooks", response_model=list[NotebookPublic])
def list_notebooks(
    ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> list[NotebookPublic]:
    """Your notebooks, newest first."""
    return [notebook_public(ctx, j) for j in notebooks.list_notebooks(session, actor)]


def _notebook(session: Session, actor: CurrentUser, job_id: int) -> Job:
    return notebooks.get_notebook(session, actor, job_id)


@router.get("/notebooks/{job_id}", response_model=NotebookPublic)
def get_notebook(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    job_id: int = Path(ge=1, le=MAX_ID),
) -> NotebookPublic:
    """One of your notebooks: `starting` until JupyterLab answers, then `ready`."""
    return notebook_public(ctx, _notebook(session, actor, job_id))
