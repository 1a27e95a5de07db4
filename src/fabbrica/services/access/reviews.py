"""Reviews: assignment (by an operator or round-robin), conflicts of interest, scores.

Applicants see scores and comments, never who wrote them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.core.access import ProposalState, ReviewStatus, review_status
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput
from fabbrica.core.identity import Role
from fabbrica.core.text import clean_text
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import (
    org_role,
    project_role,
    require_operator_of,
    require_staff,
)
from fabbrica.store.models import CallReviewer, Proposal, Review, User

ASSIGNED, SUBMITTED, CONFLICT = "assigned", "submitted", "conflict"
MAX_COMMENT = 20_000


def conflict_of(session: Session, reviewer: User, proposal: Proposal) -> str | None:
    """Why `reviewer` may not review `proposal`, or None."""
    project = proposal.project
    if org_role(session, reviewer, project.organisation_id) is not None:
        return "the reviewer belongs to the applicant's organisation"
    if project_role(session, reviewer, project) is not None:
        return "the reviewer is a member of the applicant's project"
    declared = session.scalar(
        select(Review.conflict_reason).where(
            Review.proposal_id == proposal.id,
            Review.reviewer_id == reviewer.id,
            Review.state == CONFLICT,
        )
    )
    return f"the reviewer declared a conflict: {declared}" if declared else None


def may_review(session: Session, user: User, proposal: Proposal) -> bool:
    return (
        Role(user.role) is Role.REVIEWER
        and proposal.state == ProposalState.IN_REVIEW
        and conflict_of(session, user, proposal) is None
    )


def has_reviewed(session: Session, reviewer: User, proposal: Proposal) -> bool:
    """The reviewer was assigned to, reviewed or declared a conflict on the proposal."""
    return _review_of(session, proposal, reviewer.id) is not None


def _new_review(session: Session, proposal: Proposal, reviewer_id: int, now: dt.datetime) -> Review:
    review = Review(
        proposal_id=proposal.id, reviewer_id=reviewer_id, state=ASSIGNED, assigned_at=now
    )
    session.add(review)
    return review


def _review_of(session: Session, proposal: Proposal, reviewer_id: int) -> Review | None:
    return session.scalar(
        select(Review).where(Review.proposal_id == proposal.id, Review.reviewer_id == reviewer_id)
    )


def assign(
    session: Session, actor: User, proposal: Proposal, reviewer_id: int, *, now: dt.datetime
) -> Review:
    """An operator assigns a reviewer; a conflicted one is refused."""
    require_staff(actor, "assign reviewers")
    require_operator_of(session, actor, proposal.call.factory_id, "assign reviewers")
    reviewer = session.get(User, reviewer_id)
    if reviewer is None or Role(reviewer.role) is not Role.REVIEWER:
        raise InvalidInput(f"user {reviewer_id} is not a reviewer", field="reviewer_id")
    if proposal.state != ProposalState.IN_REVIEW:
        raise Conflict(f"proposal {proposal.id} is {proposal.state}, not in review", "state")
    conflict = conflict_of(session, reviewer, proposal)
    if conflict:
        raise Conflict(f"conflict of interest: {conflict}", field="reviewer_id")
    review = _review_of(session, proposal, reviewer_id)
    if review is None:
        review = _new_review(session, proposal, reviewer_id, now)
        audit.record(
            session,
            actor=actor,
            entity="proposal",
            entity_id=proposal.id,
            action="assign_reviewer",
            now=now,
            reviewer_id=reviewer_id,
        )
    return review


def auto_assign(session: Session, proposal: Proposal, *, now: dt.datetime) -> list[Review]:
    """Round-robin: the call's reviewers with the fewest assignments first, none conflicted,
    until the call's minimum number of reviews is covered."""
    wanted = proposal.call.min_reviews - _active_count(session, proposal)
    if wanted <= 0:
        return []
    load = (
        select(Review.reviewer_id, func.count().label("n")).group_by(Review.reviewer_id).subquery()
    )
    candidates = session.execute(
        select(User, func.coalesce(load.c.n, 0))
        .join(CallReviewer, CallReviewer.user_id == User.id)
        .outerjoin(load, load.c.reviewer_id == User.id)
        .where(CallReviewer.call_id == proposal.call_id, User.active.is_(True))
        .order_by(func.coalesce(load.c.n, 0), User.id)
    ).all()
    made: list[Review] = []
    for reviewer, _ in candidates:
        if len(made) == wanted:
            break
        if _review_of(session, proposal, reviewer.id) or conflict_of(session, reviewer, proposal):
            continue
        made.append(_new_review(session, proposal, reviewer.id, now))
        session.flush()
    return made


def _active_count(session: Session, proposal: Proposal) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Review)
            .where(Review.proposal_id == proposal.id, Review.state != CONFLICT)
        )
        or 0
    )


def submit_review(
    session: Session,
    reviewer: User,
    proposal: Proposal,
    *,
    score: int,
    comment: str | None,
    now: dt.datetime,
) -> Review:
    """A reviewer scores a proposal in review (1..5). Conflicted reviewers are refused."""
    if Role(reviewer.role) is not Role.REVIEWER:
        raise Forbidden("only a reviewer may review proposals")
    if proposal.state != ProposalState.IN_REVIEW:
        raise Conflict(f"proposal {proposal.id} is {proposal.state}, not in review", "state")
    conflict = conflict_of(session, reviewer, proposal)
    if conflict:
        raise Forbidden(f"conflict of interest: {conflict}")
    if not 1 <= score <= 5:
        raise InvalidInput("score must be 1 to 5", field="score")
    text = None
    if comment:
        text = clean_text(comment, "comment", max_len=MAX_COMMENT, multiline=True)
    review = _review_of(session, proposal, reviewer.id) or _new_review(
        session, proposal, reviewer.id, now
    )
    review.state, review.score, review.comment, review.submitted_at = SUBMITTED, score, text, now
    session.flush()
    audit.record(
        session,
        actor=reviewer,
        entity="proposal",
        entity_id=proposal.id,
        action="review",
        now=now,
        score=score,
    )
    return review


def declare_conflict(
    session: Session, reviewer: User, proposal: Proposal, *, reason: str, now: dt.datetime
) -> Review:
    """A reviewer declares a conflict: their review (if any) is set aside, and another
    reviewer of the call is assigned in their place."""
    if Role(reviewer.role) is not Role.REVIEWER:
        raise Forbidden("only a reviewer may declare a conflict of interest")
    if proposal.state != ProposalState.IN_REVIEW:
        raise Conflict(f"proposal {proposal.id} is {proposal.state}, not in review", "state")
    reason = clean_text(reason, "conflict", max_len=1000)
    review = _review_of(session, proposal, reviewer.id) or _new_review(
        session, proposal, reviewer.id, now
    )
    review.state, review.score, review.conflict_reason = CONFLICT, None, reason
    session.flush()
    audit.record(
        session,
        actor=reviewer,
        entity="proposal",
        entity_id=proposal.id,
        action="declare_conflict",
        now=now,
        reason=reason,
    )
    auto_assign(session, proposal, now=now)
    return review


def reviews_of(session: Session, proposal: Proposal) -> list[Review]:
    query = select(Review).where(Review.proposal_id == proposal.id).order_by(Review.id)
    return list(session.scalars(query))


def status_of(session: Session, proposal: Proposal) -> ReviewStatus:
    return statuses_of(session, [proposal])[proposal.id]


def statuses_of(session: Session, proposals: Sequence[Proposal]) -> dict[int, ReviewStatus]:
    """The review status of each proposal, read in one query (a queue of hundreds)."""
    scores: dict[int, list[int]] = {p.id: [] for p in proposals}
    for start in range(0, len(proposals), 500):
        ids = [p.id for p in proposals[start : start + 500]]
        query = (
            select(Review.proposal_id, Review.score)
            .where(Review.proposal_id.in_(ids), Review.state == SUBMITTED)
            .order_by(Review.id)
        )
        for proposal_id, score in session.execute(query):
            if score:
                scores[proposal_id].append(score)
    return {
        p.id: review_status(scores[p.id], p.call.min_reviews, p.call.min_average_score)
        for p in proposals
    }
