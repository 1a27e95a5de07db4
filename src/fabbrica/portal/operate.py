"""An operator's pages: the decision queue (by decision deadline, with its clock in working
days), a proposal's decision (accept, possibly with fewer GPU-hours, or reject with a
reason), calls (open, close with a reason, capacity, automatic or manual), allocations
(extend, top up, suspend, resume) and the site agents. An operator sees and changes only
what concerns the factories they operate (anything else: 404); a federation admin, all.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.catalog.model import Decision
from fabbrica.core.access import CallState
from fabbrica.core.errors import Conflict, FabbricaError, Forbidden, InvalidInput
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
from fabbrica.services import accounting
from fabbrica.services.access import allocations, calls, proposals, reviews, worklists
from fabbrica.services.access.visibility import factories_of, require_staff, sees_all
from fabbrica.store.models import User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
ALLOCATION_ACTIONS = ("extend", "top_up", "suspend", "resume")
Text = Annotated[str, Form(max_length=5000)]
Short = Annotated[str, Form(max_length=40)]
SHOWN = 100  # rows of a long list on one page (the queue: the nearest deadlines first)


def _names(request: Request) -> dict[str, Any]:
    catalog = context(request).catalog
    return {
        "mode_names": {m.id: m.name for m in catalog.access_modes},
        "factory_names": {f.id: f.name for f in catalog.factories},
    }


def _scope(session: DbSession, user: User) -> list[str]:
    require_staff(user, "operate factories")
    return [] if sees_all(user) else factories_of(session, user)


def _number(text: str, field: str) -> float | None:
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InvalidInput(f"not a number: {text!r}", field=field) from None
    if not math.isfinite(number):
        raise InvalidInput(f"not a finite number: {text!r}", field=field)
    return number


@router.get("/operate", response_class=HTMLResponse)
def queue_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    scope = _scope(session, user)
    ctx = context(request)
    queue = worklists.decision_queue(session, user, ctx.catalog, now=ctx.clock(), shown=SHOWN)
    return render(
        request,
        who,
        "operate_queue.html",
        queue=queue.entries,
        more=queue.more,
        scope=scope,
        **_names(request),
    )


def _proposal_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    proposal_id: int,
    status: int = 200,
    error: FabbricaError | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    proposal = worklists.operated_proposal(session, user, proposal_id)
    in_review = proposal.state == "in_review"
    return render(
        request,
        who,
        "operate_proposal.html",
        status,
        proposal=proposal,
        reviews=reviews.reviews_of(session, proposal),
        status_of=reviews.status_of(session, proposal) if in_review else None,
        names=worklists.reviewer_names(session, user, proposal),
        allocation=allocations.for_proposal(session, proposal.id),
        error=error,
        form=form or {},
        **_names(request),
    )


@router.get("/operate/proposals/{proposal_id}", response_class=HTMLResponse)
def proposal_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, proposal_id: int
) -> Response:
    return _proposal_page(request, who, user, session, proposal_id)


@router.post(
    "/operate/proposals/{proposal_id}/decision",
    response_class=HTMLResponse,
    dependencies=[CsrfChecked],
)
def decide(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    proposal_id: int,
    decision: Short = "",
    gpu_hours: Short = "",
    reason: Text = "",
) -> Response:
    worklists.operated_proposal(session, user, proposal_id)  # another factory's: 404
    try:
        with session.begin_nested():  # refused: nothing of it stays
            if decision not in ("accept", "reject"):
                raise InvalidInput(_("choose accept or reject"), field="decision")
            proposals.decide(
                session,
                user,
                proposal_id,
                accept=decision == "accept",
                gpu_hours=_number(gpu_hours, "gpu_hours") if decision == "accept" else None,
                reason=reason or None,
                now=context(request).clock(),
            )
    except (InvalidInput, Conflict, Forbidden) as exc:  # Forbidden: the factory wants MFA
        form = {"decision": decision, "gpu_hours": gpu_hours, "reason": reason}
        status = 403 if isinstance(exc, Forbidden) else 422
        return _proposal_page(request, who, user, session, proposal_id, status, exc, form)
    session.commit()
    return RedirectResponse(f"/operate/proposals/{proposal_id}", status_code=303)


@router.get("/operate/calls", response_class=HTMLResponse)
def calls_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    found = worklists.operated_calls(session, user)
    committed = {c.id: calls.committed_gpu_hours(session, c) for c in found}
    return render(
        request, who, "operate_calls.html", calls=found, committed=committed, **_names(request)
    )


def _call_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    call_id: str,
    status: int = 200,
    error: FabbricaError | None = None,
) -> HTMLResponse:
    call = worklists.operated_call(session, user, call_id)
    committed = calls.committed_gpu_hours(session, call)
    return render(
        request,
        who,
        "operate_call.html",
        status,
        call=call,
        committed=committed,
        error=error,
        **_names(request),
    )


@router.get("/operate/calls/{call_id}", response_class=HTMLResponse)
def call_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, call_id: str
) -> Response:
    return _call_page(request, who, user, session, call_id)


@router.post("/operate/calls/{call_id}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def change_call(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    call_id: str,
    action: Short = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    offered_gpu_hours: Short = "",
) -> Response:
    worklists.operated_call(session, user, call_id)  # another factory's: 404
    try:
        with session.begin_nested():  # refused: nothing of it stays
            changes = _call_changes(action, reason, offered_gpu_hours)
            calls.update_call(session, user, call_id, changes, now=context(request).clock())
    except (InvalidInput, Conflict) as exc:
        return _call_page(request, who, user, session, call_id, 422, exc)
    session.commit()
    return RedirectResponse(f"/operate/calls/{call_id}", status_code=303)


def _call_changes(action: str, reason: str, offered: str) -> calls.CallChanges:
    reason = reason.strip()
    if action == "close":
        if not reason:
            raise InvalidInput(_("closing a call needs a reason applicants can read"), "reason")
        return calls.CallChanges(state=CallState.CLOSED, reason=reason)
    if action == "open":
        return calls.CallChanges(state=CallState.OPEN, reason=reason or None)
    if action in ("automatic", "manual"):
        return calls.CallChanges(decision=Decision(action), reason=reason or None)
    if action == "capacity":
        hours = _number(offered, "offered_gpu_hours")
        if hours is None:
            raise InvalidInput(_("give the GPU-hours the call offers"), "offered_gpu_hours")
        return calls.CallChanges(offered_gpu_hours=hours, reason=reason or None)
    raise InvalidInput(_("choose open, close, automatic, manual or capacity"), field="action")


@router.get("/operate/allocations", response_class=HTMLResponse)
def allocations_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession
) -> Response:
    found = worklists.operated_allocations(session, user, limit=SHOWN + 1)
    return render(
        request,
        who,
        "operate_allocations.html",
        allocations=found[:SHOWN],
        more=len(found) > SHOWN,
        remaining={a.id: accounting.remaining(a) for a in found},
        **_names(request),
    )


def _allocation_page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    allocation_id: int,
    status: int = 200,
    error: FabbricaError | None = None,
) -> HTMLResponse:
    allocation = worklists.operated_allocation(session, user, allocation_id)
    return render(
        request,
        who,
        "operate_allocation.html",
        status,
        allocation=allocation,
        remaining=accounting.remaining(allocation),
        error=error,
        **_names(request),
    )


@router.get("/operate/allocations/{allocation_id}", response_class=HTMLResponse)
def allocation_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, allocation_id: int
) -> Response:
    return _allocation_page(request, who, user, session, allocation_id)


@router.post(
    "/operate/allocations/{allocation_id}",
    response_class=HTMLResponse,
    dependencies=[CsrfChecked],
)
def change_allocation(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    allocation_id: int,
    action: Short = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    months: Short = "",
    gpu_hours: Short = "",
) -> Response:
    worklists.operated_allocation(session, user, allocation_id)  # another factory's: 404
    try:
        with session.begin_nested():  # refused: nothing of it stays
            if action not in ALLOCATION_ACTIONS:
                raise InvalidInput(f"choose one of: {', '.join(ALLOCATION_ACTIONS)}", "action")
            extend_by = _number(months, "months") if action == "extend" else None
            if extend_by is not None and (extend_by != int(extend_by) or not 1 <= extend_by <= 60):
                raise InvalidInput(_("extend by 1 to 60 whole months"), field="months")
            change = allocations.AllocationChange(
                action=action,
                reason=reason,
                months=int(extend_by) if extend_by is not None else None,
                gpu_hours=_number(gpu_hours, "gpu_hours") if action == "top_up" else None,
            )
            allocations.change(session, user, allocation_id, change, now=context(request).clock())
    except (InvalidInput, Conflict) as exc:
        return _allocation_page(request, who, user, session, allocation_id, 422, exc)
    session.commit()
    return RedirectResponse(f"/operate/allocations/{allocation_id}", status_code=303)


@router.get("/operate/agents", response_class=HTMLResponse)
def agents_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    sites = worklists.site_status(session, user)
    return render(
        request,
        who,
        "operate_agents.html",
        sites=sites,
        now=context(request).clock(),
        **_names(request),
    )
