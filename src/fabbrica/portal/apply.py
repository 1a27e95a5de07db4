"""Applying for GPU-hours: choose an open call, fill in its form while the rules it breaks
are named live (htmx posts the form to a check that runs the same service code as the
submission, and stores nothing), submit; then the proposal's page with its state, its
clock against the mode's decision target, its reviews (never who wrote them) and the
final report of its allocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.access import DECLARATION, Refusal
from fabbrica.core.errors import Conflict, FabbricaError, InvalidInput, NotFound
from fabbrica.portal.i18n import N_
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
from fabbrica.services.access import calls as calls_service
from fabbrica.services.access import projects as projects_service
from fabbrica.services.access import proposals as proposals_service
from fabbrica.services.access import reviews as reviews_service
from fabbrica.services.access.calls import operating_gpu_models
from fabbrica.services.access.decision_clock import decision_clock
from fabbrica.services.access.visibility import org_role
from fabbrica.store.models import Call, Project, User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
LABELS = {
    "call": N_("Call"),
    "country": N_("Country"),
    "organisation_type": N_("Organisation type"),
    "gpu_hours": N_("GPU-hours"),
    "months": N_("Duration"),
    "gpu_model": N_("GPU model"),
    "project_id": N_("Project"),
    "abstract": N_("Abstract"),
    "declare_civilian_ai_act": N_("Declaration"),
}


@dataclass
class ApplicationForm:
    """What the form holds, as typed (numbers are checked, not assumed)."""

    project: str = ""
    gpu_hours: str = ""
    months: str = ""
    gpu_model: str = ""
    abstract: str = ""
    declare: bool = False


FormProject = Annotated[str, Form(max_length=40)]
FormNumber = Annotated[str, Form(max_length=40)]
FormModel = Annotated[str, Form(max_length=100)]
FormAbstract = Annotated[str, Form(max_length=proposals_service.MAX_ABSTRACT_CHARS + 1000)]
FormDeclare = Annotated[bool, Form()]


def _led_projects(session: DbSession, user: User) -> list[Project]:
    """The projects `user` may apply for: those they lead or whose organisation they run."""
    return [
        p
        for p in projects_service.list_projects(session, user)
        if p.pi_user_id == user.id or org_role(session, user, p.organisation_id) == "admin"
    ]


@router.get("/apply", response_class=HTMLResponse)
def choose_call(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project: str = Query(default="", max_length=40),
) -> HTMLResponse:
    catalog = context(request).catalog
    return render(
        request,
        who,
        "apply_calls.html",
        calls=calls_service.list_calls(session),
        project=project,
        modes={m.id: m for m in catalog.access_modes},
        factory_names={f.id: f.name for f in catalog.factories},
    )


def _own(message: str) -> tuple[str, str]:
    """The portal's own refusal wording, as message and template (translated on show)."""
    return message, message


def _refusals(
    request: Request, session: DbSession, user: User, call: Call, form: ApplicationForm
) -> list[Refusal]:
    """The rules the form breaks, as the submission would find them."""
    found: list[Refusal] = []
    if not form.project:
        return [Refusal("project_id", *_own(N_("choose the project you apply for")))]
    hours = _number(form.gpu_hours, float)
    if hours is None:
        found.append(Refusal("gpu_hours", *_own(N_("give the GPU-hours you need as a number"))))
    months = _number(form.months, int)
    if months is None:
        found.append(Refusal("months", *_own(N_("give the duration in whole months"))))
    app = proposals_service.Application(
        project_id=form.project,
        call_id=call.id,
        gpu_hours=hours if hours is not None else 1.0,
        months=months if months is not None else 0,
        gpu_model=form.gpu_model or None,
        abstract=form.abstract,
        declare_civilian_ai_act=form.declare,
    )
    now = context(request).clock()
    checked = proposals_service.application_refusals(
        session, user, context(request).catalog, app, now=now
    )
    if months is None:  # the missing number is named once, not as a wrong duration too
        checked = [r for r in checked if r.field != "months"]
    return found + checked


def _number(text: str, kind: type[float] | type[int]) -> Any:
    try:
        return kind(text.strip().replace(",", "")) if text.strip() else None
    except ValueError:
        return None


def _form_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    call: Call,
    form: ApplicationForm,
    status: int = 200,
    refusals: list[Refusal] | None = None,
    error: FabbricaError | None = None,
) -> HTMLResponse:
    catalog = context(request).catalog
    factory = catalog.factory(call.factory_id)
    return render(
        request,
        who,
        "apply.html",
        status,
        call=call,
        mode=catalog.access_mode(call.mode),
        factory_name=factory.name if factory else call.factory_id,
        gpu_models=sorted(operating_gpu_models(factory)) if factory else [],
        projects=_led_projects(session, user),
        form=form,
        refusals=refusals,
        broken={r.field for r in refusals or []},
        labels=LABELS,
        declaration=DECLARATION,
        error=error,
    )


@router.get("/calls/{call_id}/apply", response_class=HTMLResponse)
def application_form(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    call_id: str,
    project: str = Query(default="", max_length=40),
) -> HTMLResponse:
    call = calls_service.get_call(session, call_id)
    return _form_page(request, who, user, session, call, ApplicationForm(project=project))


@router.post(
    "/calls/{call_id}/apply/check", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
def check_application(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    call_id: str,
    project: FormProject = "",
    gpu_hours: FormNumber = "",
    months: FormNumber = "",
    gpu_model: FormModel = "",
    abstract: FormAbstract = "",
    declare: FormDeclare = False,
) -> HTMLResponse:
    """The broken rules of the form as it stands (htmx, while typing); nothing stored."""
    call = calls_service.get_call(session, call_id)
    form = ApplicationForm(project, gpu_hours, months, gpu_model, abstract, declare)
    refusals = _refusals(request, session, user, call, form)
    return render(request, who, "refusals_list.html", refusals=refusals, labels=LABELS)


@router.post("/calls/{call_id}/apply", dependencies=[CsrfChecked])
def submit_application(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    call_id: str,
    project: FormProject = "",
    gpu_hours: FormNumber = "",
    months: FormNumber = "",
    gpu_model: FormModel = "",
    abstract: FormAbstract = "",
    declare: FormDeclare = False,
) -> Response:
    """Submit the application; with a rule broken, the form again naming each one."""
    ctx = context(request)
    call = calls_service.get_call(session, call_id)
    form = ApplicationForm(project, gpu_hours, months, gpu_model, abstract, declare)
    refusals = _refusals(request, session, user, call, form)
    if refusals:  # nothing was written
        return _form_page(request, who, user, session, call, form, 422, refusals)
    app = proposals_service.Application(
        project_id=project,
        call_id=call.id,
        gpu_hours=float(gpu_hours.replace(",", "")),
        months=int(months.replace(",", "")),
        gpu_model=gpu_model or None,
        abstract=abstract,
        declare_civilian_ai_act=declare,
    )
    try:
        with session.begin_nested():  # a refusal undoes only this
            proposal = proposals_service.apply(session, user, ctx.catalog, app, now=ctx.clock())
            proposal_id = proposal.id
    except (InvalidInput, Conflict, NotFound) as exc:
        return _form_page(request, who, user, session, call, form, 422, error=exc)
    session.commit()
    return RedirectResponse(f"/proposals/{proposal_id}", status_code=303)


@router.get("/proposals/{proposal_id}", response_class=HTMLResponse)
def proposal_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, proposal_id: int
) -> HTMLResponse:
    ctx = context(request)
    proposal = proposals_service.get_proposal(session, user, proposal_id)
    mode = ctx.catalog.access_mode(proposal.call.mode)
    factory = ctx.catalog.factory(proposal.call.factory_id)
    reviews = [
        (r.score, r.comment)
        for r in reviews_service.reviews_of(session, proposal)
        if r.state == reviews_service.SUBMITTED
    ]
    return render(
        request,
        who,
        "proposal.html",
        proposal=proposal,
        mode_name=mode.name if mode else proposal.call.mode,
        factory_name=factory.name if factory else proposal.call.factory_id,
        clock=decision_clock(ctx.catalog, proposal, ctx.clock()),
        reviews=reviews,
        allocation=allocations_service.for_proposal(session, proposal.id),
    )
