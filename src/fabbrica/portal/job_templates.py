"""Job templates in the portal: the list, and a form per template whose fields are its
parameters (typed, with their defaults and limits); submitting it queues the job as
`fabbrica run --template` and POST /api/v1/templates/{name}/jobs do."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fabbrica.core.errors import FabbricaError, InvalidInput, NotFound
from fabbrica.core.text import SLUG_PATTERN
from fabbrica.portal.jobs import queue_job
from fabbrica.portal.web import (
    CSRF_FIELD,
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
)
from fabbrica.services.access import projects as projects_service
from fabbrica.services.templates import Found, workdir_archive
from fabbrica.store.models import User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
PARAMETER_PREFIX = "p_"  # a parameter's form field: p_<name>, apart from project, csrf...
MAX_DATASETS = 16


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, who: ViewerDep, user: UserDep) -> Response:
    found = context(request).templates.listed()
    return render(request, who, "job_templates.html", templates=[f.template for f in found])


def _form(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    found: Found,
    *,
    status: int = 200,
    error: FabbricaError | None = None,
    entered: dict[str, str] | None = None,
) -> HTMLResponse:
    template = found.template
    values = {
        name: (entered or {}).get(name, "" if p.default is None else _shown(p.default))
        for name, p in template.parameters.items()
    }
    return render(
        request,
        who,
        "job_template.html",
        status,
        job_template=template,
        values=values,
        prefix=PARAMETER_PREFIX,
        projects=projects_service.list_projects(session, user),
        chosen_project=(entered or {}).get("project", ""),
        datasets=(entered or {}).get("datasets", ""),
        error=error,
    )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@router.get("/templates/{name}", response_class=HTMLResponse)
def template_form(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, name: str
) -> Response:
    return _form(request, who, user, session, _named(request, name))


def _named(request: Request, name: str) -> Found:
    if not re.match(SLUG_PATTERN, name):
        raise NotFound(f"no template {name[:64]!r}", field="template")
    return context(request).templates.named(name)


def _entered(form: FormData, found: Found) -> tuple[dict[str, str], dict[str, str]]:
    """What the form sent: every field as text (to show again), and the parameters given
    (a bool's unchecked box sends nothing: false; an empty field: the default)."""
    entered = {
        k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD and len(v) < 4096
    }
    given: dict[str, str] = {}
    for name, parameter in found.template.parameters.items():
        value = form.get(PARAMETER_PREFIX + name)
        if parameter.type == "bool":
            given[name] = "true" if value == "true" else "false"
            entered[name] = given[name]
        elif isinstance(value, str) and value.strip():
            given[name] = value.strip()
            entered[name] = value
    return entered, given


def _datasets(text: str) -> tuple[str, ...]:
    names = tuple(n for n in (part.strip() for part in text.replace(",", " ").split()) if n)
    if len(names) > MAX_DATASETS:
        raise InvalidInput(f"at most {MAX_DATASETS} data sets", "datasets")
    return names


@router.post("/templates/{name}", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def submit_template(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, name: str
) -> Response:
    found = _named(request, name)
    form = await request.form()  # read once: the CSRF check has parsed it already
    entered, given = _entered(form, found)
    project = entered.get("project", "")[:40] or None
    ctx = context(request)

    def work() -> Response:
        # a refusal undoes the savepoint only: the page that names it still reads
        savepoint = session.begin_nested()
        try:
            rendered, _found = ctx.templates.render_job(
                name, given, project=project, datasets=_datasets(entered.get("datasets", ""))
            )
            job_id = queue_job(request, session, user, rendered.spec, workdir_archive(found),
                               project)  # fmt: skip
        except (InvalidInput, NotFound) as exc:
            savepoint.rollback()
            return _form(request, who, user, session, found, status=422, error=exc,
                         entered=entered)  # fmt: skip
        ctx.wake()
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    return await run_in_threadpool(work)
