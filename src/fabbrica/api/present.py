"""ORM rows to public schemas, with what each viewer may see."""

from __future__ import annotations

from sqlalchemy.orm import Session

from fabbrica.api.schemas_access import (
    AllocationPublic,
    CallPublic,
    MemberPublic,
    NoticePublic,
    ProjectPublic,
    ProposalPublic,
    ReviewerReview,
    ReviewPublic,
)
from fabbrica.services import accounting
from fabbrica.services.access import calls, projects, reviews
from fabbrica.services.access.visibility import operates
from fabbrica.store.models import Allocation, BudgetAlert, Call, Project, Proposal, User


def project_public(session: Session, project: Project) -> ProjectPublic:
    return ProjectPublic(
        id=project.id or "",
        title=project.title,
        org_id=project.organisation_id,
        organisation=project.organisation.name,
        pi_user_id=project.pi_user_id,
        mode=project.mode,
        created_at=project.created_at,
        members=[
            MemberPublic(user_id=m.user_id, name=m.user.name, email=m.user.email, role=m.role)
            for m in projects.members(session, project)
        ],
    )


def call_public(session: Session, viewer: User, call: Call) -> CallPublic:
    """A call; its reviewer pool only for its factory's operators and admins (applicants
    must not learn reviewers)."""
    public = CallPublic.model_validate(call)
    return public.model_copy(
        update={
            "committed_gpu_hours": calls.committed_gpu_hours(session, call),
            "reviewers": (
                calls.reviewers_of(session, call)
                if operates(session, viewer, call.factory_id)
                else []
            ),
        }
    )


def allocation_public(allocation: Allocation) -> AllocationPublic:
    return AllocationPublic(
        id=allocation.id,
        project=allocation.project.id or "",
        factory=allocation.factory_id,
        call=allocation.call_id,
        gpu_model=allocation.gpu_model,
        gpu_hours=allocation.granted_gpu_hours,
        used_gpu_hours=allocation.used_gpu_hours,
        reserved_gpu_hours=allocation.reserved_gpu_hours,
        remaining_gpu_hours=accounting.remaining(allocation),
        valid_from=allocation.valid_from,
        valid_until=allocation.valid_until,
        state=allocation.state,
        final_report_due=allocation.final_report_due,
        final_report_submitted=allocation.final_report is not None,
    )


def notice_public(alert: BudgetAlert) -> NoticePublic:
    allocation = alert.allocation
    return NoticePublic(
        id=alert.id,
        allocation=allocation.id,
        project=allocation.project.id or "",
        factory=allocation.factory_id,
        threshold=alert.threshold,
        message=alert.message,
        used_gpu_hours=alert.used_gpu_hours,
        gpu_hours=alert.granted_gpu_hours,
        valid_until=alert.valid_until,
        created_at=alert.created_at,
    )


def proposal_public(
    session: Session, viewer: User, proposal: Proposal, allocation: Allocation | None
) -> ProposalPublic:
    rows = reviews.reviews_of(session, proposal)
    shown: list[ReviewPublic] | list[ReviewerReview]
    if operates(session, viewer, proposal.call.factory_id):
        shown = [
            ReviewerReview(
                score=r.score,
                comment=r.comment,
                submitted_at=r.submitted_at,
                reviewer_id=r.reviewer_id,
                state=r.state,
                conflict_reason=r.conflict_reason,
            )
            for r in rows
        ]
    else:  # applicants (and reviewers) never learn who wrote which review
        shown = [
            ReviewPublic(score=r.score, comment=r.comment, submitted_at=r.submitted_at)
            for r in rows
            if r.state == reviews.SUBMITTED
        ]
    return ProposalPublic(
        id=proposal.id,
        project=proposal.project.id or "",
        call=proposal.call_id,
        mode=proposal.call.mode,
        factory=proposal.call.factory_id,
        state=proposal.state,
        gpu_hours=proposal.gpu_hours,
        months=proposal.months,
        gpu_model=proposal.gpu_model,
        abstract=proposal.abstract,
        declaration=proposal.declaration,
        submitted_at=proposal.submitted_at,
        decided_at=proposal.decided_at,
        decided_gpu_hours=proposal.decided_gpu_hours,
        decision_reason=proposal.decision_reason,
        auto_decided=proposal.auto_decided,
        reviews=shown,
        allocation=allocation_public(allocation) if allocation is not None else None,
    )
