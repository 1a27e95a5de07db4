"""Job templates in the portal: the list, and a template's form (its parameters, each with
its type, default and limits) that submits a job made from it (its folder is the workdir),
as `fabbrica run --template NAME --set ...` does. A refusal names the parameter and keeps
what was typed; nothing is queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import FabbricaError, InvalidInput, NotFound
from fabbrica.core.templates import describe
from fabbrica.portal.web import (
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
)
from fabbrica.services import submission
from fabbrica.services.access import projects as projects_service
from fabbrica.services.templates import workdir_archive

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
TemplateName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
PREFIX = "p."  # a parameter's form field: p.<name>
MAX_FIELD = 4096


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, who: ViewerDep, user: UserDep) -> Response:
    listed = context(request).templates.listed()
    return render(request, who, "job_templates.html", templates=[f.template for f in listed])


@router.get("/templates/{name}", response_class=HTMLResponse)
def template_form(
    name: TemplateName, request: Request, who: ViewerDep, user: UserDep, session: DbSession
) -> Response:
    return _form(request, who, user, session, name)


def _form(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    name: str,
    status: int = 200,
    error: FabbricaError | None = None,
    typed: dict[str, str] | None = None,
    project: str = "",
) -> HTMLResponse:
    found = context(request).templates.named(name)
    parameters = [
        {
            "name": key,
            "parameter": parameter,
            "facts": describe(parameter),
            "value": (typed or {}).get(key, _shown(parameter.default)),
        }
        for key, parameter in found.template.parameters.items()
    ]
    return render(
        request,
        who,
        "job_template.html",
        status,
        job_template=found.template,
        parameters=parameters,
        projects=projects_service.list_projects(session, user),
        project=project,
        error=error,
    )


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@router.post("/templates/{name}", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def submit_template(
    name: TemplateName,
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    ctx = context(request)
    form = await request.form()
    typed = {
        key.removeprefix(PREFIX): str(value)[:MAX_FIELD]
        for key, value in form.multi_items()
        if key.startswith(PREFIX) and isinstance(value, str)
    }
    given = {key: value for key, value in typed.items() if value.strip() != ""}  # "": default
    savepoint = session.begin_nested()
    try:
        rendered, found = ctx.templates.render_job(name, given, project=project or None)
        job_id = submission.submit_and_commit(
            session,
            user,
            ctx.catalog,
            rendered.spec,
            project_id=project or None,
            archive=workdir_archive(found),
            files=ctx.files,
            limits=ctx.archive_limits,
            connected=ctx.executors.connected(session),
            single_user=ctx.single_user,
            now=ctx.clock(),
            present=lambda job: job.id,
        )
    except (InvalidInput, NotFound) as exc:
        savepoint.rollback()
        return _form(request, who, user, session, name, 422, exc, typed, project)
    ctx.wake()  # a control loop in this process (`fabbrica up`) dispatches it now
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
