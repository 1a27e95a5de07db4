"""A reviewer's pages: the proposals assigned to them, a proposal with the score and comment
form, and the declaration of a conflict of interest. A reviewer reaches only the proposals
assigned to them (any other: 404) and sees only their own review, never another
reviewer's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.access import ProposalState
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
from fabbrica.services.access import reviews, worklists
from fabbrica.store.models import User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


@router.get("/review", response_class=HTMLResponse)
def review_list(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    assigned = worklists.assignments(session, user)
    return render(
        request, who, "review_list.html", assigned=assigned, mode_names=_mode_names(request)
    )


def _mode_names(request: Request) -> dict[str, str]:
    return {m.id: m.name for m in context(request).catalog.access_modes}


def _page(
    request: Request,
    who: ViewerDep,
    user: User,
    session: DbSession,
    proposal_id: int,
    status: int = 200,
    error: FabbricaError | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    found = worklists.assignment(session, user, proposal_id)
    proposal = found.proposal
    return render(
        request,
        who,
        "review.html",
        status,
        proposal=proposal,
        review=found.review,
        open=proposal.state == ProposalState.IN_REVIEW and found.review.state != reviews.CONFLICT,
        mode_names=_mode_names(request),
        error=error,
        form=form or {},
    )


@router.get("/review/{proposal_id}", response_class=HTMLResponse)
def review_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, proposal_id: int
) -> Response:
    return _page(request, who, user, session, proposal_id)


@router.post("/review/{proposal_id}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def score(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    proposal_id: int,
    score: Annotated[str, Form(max_length=8)] = "",
    comment: Annotated[str, Form(max_length=reviews.MAX_COMMENT)] = "",
) -> Response:
    proposal = worklists.assignment(session, user, proposal_id).proposal
    try:
        with session.begin_nested():  # refused: nothing of it stays
            if not score.strip().isdigit():
                raise InvalidInput(_("give a score from 1 to 5"), field="score")
            reviews.submit_review(
                session,
                user,
                proposal,
                score=int(score),
                comment=comment or None,
                now=context(request).clock(),
            )
    except (InvalidInput, Conflict, Forbidden) as exc:
        form = {"score": score, "comment": comment}
        return _page(request, who, user, session, proposal_id, 422, exc, form)
    session.commit()
    return RedirectResponse(f"/review/{proposal_id}", status_code=303)


@router.post(
    "/review/{proposal_id}/conflict", response_class=HTMLResponse, dependencies=[CsrfChecked]
)
def declare_conflict(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    proposal_id: int,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    proposal = worklists.assignment(session, user, proposal_id).proposal
    try:
        with session.begin_nested():  # refused: nothing of it stays
            reviews.declare_conflict(
                session, user, proposal, reason=reason, now=context(request).clock()
            )
    except (InvalidInput, Conflict, Forbidden) as exc:
        return _page(request, who, user, session, proposal_id, 422, exc, {"reason": reason})
    session.commit()
    return RedirectResponse("/review", status_code=303)
