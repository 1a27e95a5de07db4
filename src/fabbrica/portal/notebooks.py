"""A member's notebooks in the portal: start one in a click, open it, stop it. The same
services as `fabbrica notebook` and POST /api/v1/notebooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import FabbricaError
from fabbrica.core.notebooks import DEFAULT_HOURS, WARN_S, NotebookRequest
from fabbrica.portal.web import (
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
)
from fabbrica.services import jobs, notebooks
from fabbrica.services.access import projects as projects_service
from fabbrica.store.models import Job, User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
REFRESH_S = 30  # the list (states, warnings) refreshes itself this often; 2 s while one
# starts or stops


def _page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    status: int = 200,
    error: FabbricaError | None = None,
) -> HTMLResponse:
    ctx = context(request)
    executors, now = ctx.executors, ctx.clock()
    rows = [
        (
            job,
            notebooks.state_of(executors, job, ctx.tunnels),
            notebooks.url_of(job),
            notebooks.ending(executors, job, now),
        )
        for job in notebooks.list_notebooks(session, user, limit=50)
    ]
    return render(
        request,
        who,
        "notebooks.html",
        status,
        notebooks=rows,
        warn_minutes=WARN_S // 60,
        refresh_s=2 if any(_changing(job, state) for job, state, _, _ in rows) else REFRESH_S,
        projects=projects_service.list_projects(session, user),
        default_hours=DEFAULT_HOURS,
        error=error,
    )


def _changing(job: Job, state: str) -> bool:
    """Starting, or stopping (cancelled, not ended yet): its row changes in seconds."""
    return state in (notebooks.STARTING, notebooks.RECONNECTING) or (
        job.cancel_requested and job.ended_at is None
    )


@router.get("/notebooks", response_class=HTMLResponse)
def notebooks_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    return _page(request, who, user, session)


@router.post("/notebooks", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start_notebook(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project: Annotated[str, Form(max_length=40)] = "",
    gpus: Annotated[int, Form(ge=1, le=1024)] = 1,
    hours: Annotated[float, Form(gt=0, le=336)] = DEFAULT_HOURS,
) -> Response:
    ctx = context(request)
    savepoint = session.begin_nested()
    try:
        job = notebooks.start(
            session,
            user,
            ctx.catalog,
            NotebookRequest(project=project or None, gpus=gpus, hours=hours),
            idle_s=ctx.notebook_idle_s,
            connected=ctx.executors.connected(session),
            single_user=ctx.single_user,
            now=ctx.clock(),
        )
        session.commit()
    except FabbricaError as exc:
        savepoint.rollback()
        return _page(request, who, user, session, exc.status, exc)
    ctx.wake()
    return RedirectResponse(f"/notebooks#notebook-{job.id}", status_code=303)


@router.post("/notebooks/{job_id}/stop", dependencies=[CsrfChecked])
def stop_notebook(request: Request, user: UserDep, session: DbSession, job_id: int) -> Response:
    job = notebooks.get_notebook(session, user, job_id)
    jobs.cancel(session, user, job.id, now=context(request).clock())
    session.commit()
    return RedirectResponse("/notebooks", status_code=303)
