"""An applicant's organisations and projects: create them, invite people by email, and
accept an invitation (to a project by its emailed token, to an organisation by joining).
Every page and form calls services.access, as the CLI and the API do."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import Conflict, FabbricaError, InvalidInput, NotFound
from fabbrica.portal.i18n import _
from fabbrica.portal.web import (
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
)
from fabbrica.services.access import allocations as allocations_service
from fabbrica.services.access import organisations as orgs_service
from fabbrica.services.access import projects as projects_service
from fabbrica.services.access import proposals as proposals_service
from fabbrica.services.access.visibility import org_role, visible_project
from fabbrica.store.models import User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
FORM_ERRORS = (InvalidInput, NotFound, Conflict)  # shown on the form; the rest are pages


def _projects_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    status: int = 200,
    error: FabbricaError | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    catalog = context(request).catalog
    return render(
        request,
        who,
        "projects.html",
        status,
        organisations=orgs_service.list_organisations(session, user),
        projects=projects_service.list_projects(session, user),
        invitations=orgs_service.invitations_for(session, user),
        organisation_types=[str(t) for t in catalog.organisation_types],
        sectors=catalog.sectors,
        modes=[m for m in catalog.access_modes if not m.legacy],
        error=error,
        form=form or {},
    )


@router.get("/projects", response_class=HTMLResponse)
def projects_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession
) -> HTMLResponse:
    return _projects_page(request, who, user, session)


@router.post("/organisations", dependencies=[CsrfChecked])
def create_organisation(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    name: Annotated[str, Form(max_length=400)] = "",
    country: Annotated[str, Form(max_length=20)] = "",
    type: Annotated[str, Form(max_length=40)] = "",
    sector: Annotated[str, Form(max_length=80)] = "",
) -> Response:
    ctx = context(request)
    try:
        with session.begin_nested():  # a refusal undoes only this
            org = orgs_service.create_organisation(
                session, user, ctx.catalog, name=name, country=country, type=type,
                sector=sector or None, now=ctx.clock(),
            )  # fmt: skip
            org_id = org.id
    except FORM_ERRORS as exc:
        form = {"org_name": name, "country": country, "type": type, "sector": sector}
        return _projects_page(request, who, user, session, 422, exc, form)
    session.commit()
    return RedirectResponse(f"/organisations/{org_id}", status_code=303)


@router.get("/organisations/{org_id}", response_class=HTMLResponse)
def organisation_page(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    org_id: int,
    added: str = Query(default="", max_length=254),
) -> HTMLResponse:
    return _organisation_page(request, who, user, session, org_id, added=added)


def _organisation_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    org_id: int,
    status: int = 200,
    error: FabbricaError | None = None,
    added: str = "",
) -> HTMLResponse:
    org = orgs_service.get_organisation(session, user, org_id)
    return render(
        request,
        who,
        "organisation.html",
        status,
        org=org,
        members=orgs_service.members(session, org),
        projects=projects_service.list_projects(session, user, org_id=org.id),
        admin=org_role(session, user, org.id) == "admin",
        error=error,
        added=added,
    )


@router.post("/organisations/{org_id}/members", dependencies=[CsrfChecked])
def add_member(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    org_id: int,
    email: Annotated[str, Form(max_length=254)] = "",
    admin: Annotated[bool, Form()] = False,
) -> Response:
    orgs_service.get_organisation(session, user, org_id)  # another's: 404 before anything
    try:
        with session.begin_nested():  # a refusal undoes only this
            orgs_service.add_member(
                session, user, org_id, email=email, admin=admin, now=context(request).clock()
            )
    except FORM_ERRORS as exc:
        return _organisation_page(request, who, user, session, org_id, 422, exc)
    session.commit()
    return RedirectResponse(f"/organisations/{org_id}?added={quote(email)}", status_code=303)


@router.post("/organisations/{org_id}/join", dependencies=[CsrfChecked])
def join_organisation(request: Request, user: UserDep, session: DbSession, org_id: int) -> Response:
    orgs_service.join(session, user, org_id, now=context(request).clock())
    session.commit()
    return RedirectResponse(f"/organisations/{org_id}", status_code=303)


@router.post("/projects", dependencies=[CsrfChecked])
def create_project(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    title: Annotated[str, Form(max_length=600)] = "",
    org_id: Annotated[str, Form(max_length=20)] = "",
    mode: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    ctx = context(request)
    try:
        with session.begin_nested():  # a refusal undoes only this
            if not org_id.isdigit():
                raise InvalidInput(_("choose an organisation (create one first)"), field="org_id")
            project = projects_service.create_project(
                session, user, ctx.catalog, title=title, org_id=int(org_id), mode=mode or None,
                now=ctx.clock(),
            )  # fmt: skip
            project_id = project.id
    except FORM_ERRORS as exc:
        form = {"title": title, "org_id": org_id, "mode": mode}
        return _projects_page(request, who, user, session, 422, exc, form)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}", status_code=303)


def _project_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    project_id: str,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    project = visible_project(session, user, project_id)
    manages = project.pi_user_id == user.id or (
        org_role(session, user, project.organisation_id) == "admin"
    )
    return render(
        request,
        who,
        "project.html",
        status,
        project=project,
        members=projects_service.members(session, project),
        proposals=proposals_service.list_proposals(session, user, project_id=project.id),
        allocations=allocations_service.list_allocations(session, user, project_id=project.id),
        manages=manages,
        **{"error": None, "invited": "", **extra},
    )


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project_id: str,
    invited: str = Query(default="", max_length=254),
) -> HTMLResponse:
    return _project_page(request, who, user, session, project_id, invited=invited)


@router.post("/projects/{project_id}/invitations", dependencies=[CsrfChecked])
def invite(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project_id: str,
    email: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    visible_project(session, user, project_id)  # another's: 404 first
    try:
        with session.begin_nested():  # a refusal undoes only this
            invitation, _ = projects_service.invite(
                session, user, project_id=project_id, email=email, now=context(request).clock()
            )
            sent_to = invitation.email
    except FORM_ERRORS as exc:
        return _project_page(request, who, user, session, project_id, 422, error=exc)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}?invited={quote(sent_to)}", status_code=303)


@router.get("/invitations/accept", response_class=HTMLResponse)
def accept_form(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    token: str = Query(default="", max_length=200),
) -> HTMLResponse:
    return render(request, who, "accept.html", token=token, error=None)


@router.post("/invitations/accept", dependencies=[CsrfChecked])
def accept(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        with session.begin_nested():  # a refusal undoes only this
            project = projects_service.accept(
                session, user, token=token, now=context(request).clock()
            )
            project_id = project.id
    except (NotFound, Conflict) as exc:
        return render(request, who, "accept.html", 422, token=token, error=exc)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}", status_code=303)
