from __future__ import annotations

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import ProposalIdPath
from fabbrica.api.present import proposal_public
from fabbrica.api.schemas_access import (
    DecisionCreate,
    ProposalCreate,
    ProposalPublic,
    ReviewCreate,
    ReviewerAssign,
)
from fabbrica.core.access import ProposalState
from fabbrica.core.errors import InvalidInput
from fabbrica.services.access import allocations, proposals, reviews
from fabbrica.store.models import Proposal, User

router = APIRouter(tags=["proposals"])


def _out(session: Session, viewer: User, proposal: Proposal) -> ProposalPublic:
    return proposal_public(
        session, viewer, proposal, allocations.for_proposal(session, proposal.id)
    )


@router.post("/proposals", response_model=ProposalPublic, status_code=status.HTTP_201_CREATED)
def apply(
    body: ProposalCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> ProposalPublic:
    """Apply to a call for a project you lead. Submitted at once unless `submit` is false;
    Playground and Fast Lane proposals that pass the checks are decided at once."""
    application = proposals.Application(**body.model_dump())
    proposal = proposals.apply(session, actor, catalog, application, now=ctx.clock())
    return _out(session, actor, proposal)


@router.get("/proposals", response_model=list[ProposalPublic])
def list_proposals(
    session: SessionDep,
    actor: CurrentUser,
    project_id: str | None = Query(default=None, max_length=40),
    state: ProposalState | None = None,
) -> list[ProposalPublic]:
    """Proposals of your projects (staff: all)."""
    found = proposals.list_proposals(
        session, actor, project_id=project_id, state=state.value if state else None
    )
    return [_out(session, actor, p) for p in found]


@router.get("/proposals/{proposal_id}", response_model=ProposalPublic)
def get_proposal(
    proposal_id: ProposalIdPath, session: SessionDep, actor: CurrentUser
) -> ProposalPublic:
    """One proposal with its reviews (applicants never see reviewer identities)."""
    return _out(session, actor, proposals.get_proposal(session, actor, proposal_id))


@router.post("/proposals/{proposal_id}/submit", response_model=ProposalPublic)
def submit(
    proposal_id: ProposalIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
    declare_civilian_ai_act: bool = Query(default=False),
) -> ProposalPublic:
    """Submit a draft (with the declaration)."""
    proposal = proposals.get_proposal(session, actor, proposal_id)
    proposals.submit(
        session, actor, catalog, proposal, declared=declare_civilian_ai_act, now=ctx.clock()
    )
    return _out(session, actor, proposal)


@router.post("/proposals/{proposal_id}/withdraw", response_model=ProposalPublic)
def withdraw(
    proposal_id: ProposalIdPath, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> ProposalPublic:
    """Withdraw a proposal that is not decided yet."""
    return _out(session, actor, proposals.withdraw(session, actor, proposal_id, now=ctx.clock()))


@router.post("/proposals/{proposal_id}/reviews", response_model=ProposalPublic)
def review(
    body: ReviewCreate,
    proposal_id: ProposalIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> ProposalPublic:
    """A reviewer scores a proposal in review (1..5), or declares a conflict of interest."""
    proposal = proposals.proposal_to_review(session, actor, proposal_id)
    if body.conflict is not None:
        reviews.declare_conflict(session, actor, proposal, reason=body.conflict, now=ctx.clock())
    elif body.score is None:
        raise InvalidInput("give a score from 1 to 5, or declare a conflict", field="score")
    else:
        reviews.submit_review(
            session, actor, proposal, score=body.score, comment=body.comment, now=ctx.clock()
        )
    return _out(session, actor, proposal)


@router.post("/proposals/{proposal_id}/reviewers", response_model=ProposalPublic)
def assign_reviewer(
    body: ReviewerAssign,
    proposal_id: ProposalIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> ProposalPublic:
    """An operator assigns a reviewer (conflicted reviewers are refused)."""
    proposal = proposals.get_proposal(session, actor, proposal_id)
    reviews.assign(session, actor, proposal, body.reviewer_id, now=ctx.clock())
    return _out(session, actor, proposal)


@router.post("/proposals/{proposal_id}/decision", response_model=ProposalPublic)
def decide(
    body: DecisionCreate,
    proposal_id: ProposalIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> ProposalPublic:
    """An operator accepts (with the requested or fewer GPU-hours) or rejects with a reason;
    on a factory that requires MFA, only when signed in with MFA."""
    proposal = proposals.decide(
        session,
        actor,
        proposal_id,
        accept=body.decision == "accept",
        gpu_hours=body.gpu_hours,
        reason=body.reason,
        now=ctx.clock(),
    )
    return _out(session, actor, proposal)
