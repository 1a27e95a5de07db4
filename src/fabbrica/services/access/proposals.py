"""Proposals: apply, eligibility, automatic decisions, operator decisions, withdrawal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import AccessMode, Catalog, Decision
from fabbrica.catalog.model import Review as ReviewKind
from fabbrica.core.access import (
    DECLARATION,
    LIVE,
    MAX_ABSTRACT_CHARS,
    ONE_LIVE_ALLOCATION_MODES,
    Applicant,
    CallState,
    GrantRequest,
    ProposalState,
    Refusal,
    eligibility_refusals,
    next_cutoff,
    refused,
)
from fabbrica.core.billing import gpu_hours_problem
from fabbrica.core.errors import Conflict, InvalidInput, NotFound
from fabbrica.core.identity import Role
from fabbrica.core.lookup import resolve
from fabbrica.core.text import clean_text
from fabbrica.services import notify
from fabbrica.services.access import audit, reviews
from fabbrica.services.access.allocations import create_allocation, overdue_reports
from fabbrica.services.access.calls import committed_gpu_hours, get_call, operating_gpu_models
from fabbrica.services.access.visibility import (
    proposal_filter,
    require_operator_of,
    require_pi,
    require_staff,
    visible_project,
)
from fabbrica.store.models import Allocation, Call, Organisation, Proposal, User


@dataclass(frozen=True)
class Application:
    project_id: str
    call_id: str
    gpu_hours: float
    months: int
    gpu_model: str | None = None
    abstract: str = ""
    declare_civilian_ai_act: bool = False
    submit: bool = True


def apply(
    session: Session, actor: User, catalog: Catalog, app: Application, *, now: dt.datetime
) -> Proposal:
    """Create a proposal and (by default) submit it; auto-decided modes decide at once."""
    project = visible_project(session, actor, app.project_id)
    require_pi(session, actor, project)
    call = get_call(session, app.call_id, field="call_id")
    abstract = clean_text(
        app.abstract, "abstract", max_len=MAX_ABSTRACT_CHARS, min_len=0, multiline=True
    )
    gpu_model = _gpu_model(catalog, call, app.gpu_model)
    proposal = Proposal(
        project_pk=project.pk,
        call_id=call.id,
        state=ProposalState.DRAFT.value,
        gpu_hours=app.gpu_hours,
        months=app.months,
        gpu_model=gpu_model,
        abstract=abstract,
        created_by=actor.id,
        created_at=now,
    )
    session.add(proposal)
    session.flush()
    audit.record(
        session, actor=actor, entity="proposal", entity_id=proposal.id, action="create", now=now
    )
    if app.submit:
        submit(session, actor, catalog, proposal, declared=app.declare_civilian_ai_act, now=now)
    return proposal


def submit(
    session: Session,
    actor: User,
    catalog: Catalog,
    proposal: Proposal,
    *,
    declared: bool,
    now: dt.datetime,
) -> Proposal:
    require_pi(session, actor, proposal.project)
    if proposal.state != ProposalState.DRAFT:
        raise Conflict(f"proposal {proposal.id} is {proposal.state}, not a draft", "state")
    if not declared:
        raise InvalidInput(
            "the declaration of civilian use and EU AI Act compliance is required: " + DECLARATION,
            field="declare_civilian_ai_act",
        )
    _check_eligible(session, actor, catalog, proposal, now)
    _check_one_live(session, proposal, now)
    proposal.declaration = DECLARATION
    proposal.declared_at = now
    proposal.state = ProposalState.SUBMITTED.value
    proposal.submitted_at = now
    audit.record(
        session, actor=actor, entity="proposal", entity_id=proposal.id, action="submit", now=now
    )
    project = proposal.project
    _tell_pi(
        session,
        proposal,
        f"Proposal {proposal.id} for {project.id} received",
        f"Your proposal {proposal.id} ({proposal.gpu_hours:,.0f} GPU-hours, "
        f"{proposal.months} months, call {proposal.call_id}) was submitted.",
        "submission",
        now,
    )
    mode = _mode(catalog, proposal.call)
    if mode.review is ReviewKind.TECHNICAL_AND_PEER:
        proposal.state = ProposalState.IN_REVIEW.value
        reviews.auto_assign(session, proposal, now=now)
    elif proposal.call.decision == Decision.AUTOMATIC:
        _auto_decide(session, proposal, now)
    return proposal


def _gpu_model(catalog: Catalog, call: Call, text: str | None) -> str | None:
    """The factory's model id for what the applicant typed ("A100", "NVIDIA H100" ...);
    unknown text is kept as typed, and the eligibility check names it."""
    if text is None or not text.strip():
        return None
    factory = catalog.factory(call.factory_id)
    models: list[tuple[str, str]] = []
    if factory is not None:
        models = [(p.gpu_model, p.gpu_name) for p in factory.operating_partitions()]
    return resolve(text, models) or clean_text(text, "gpu_model", max_len=64).lower()


def _mode(catalog: Catalog, call: Call) -> AccessMode:
    mode = catalog.access_mode(call.mode)
    if mode is None:
        raise NotFound(f"call {call.id} names mode {call.mode!r}, not in the catalog", "call_id")
    return mode


def _check_one_live(session: Session, proposal: Proposal, now: dt.datetime) -> None:
    """A Playground call gives a project one live allocation: a second application, while
    one is live or another waits for its decision, is refused naming it."""
    call = proposal.call
    if call.mode not in ONE_LIVE_ALLOCATION_MODES:
        return
    # Lock the call: two applications of one project never both pass this check. FOR NO
    # KEY UPDATE (key_share): the proposal's own row already holds a key-share lock on
    # the call through its foreign key, and FOR UPDATE would deadlock two applicants.
    session.scalars(select(Call).where(Call.id == call.id).with_for_update(key_share=True)).one()
    project = proposal.project
    live = session.scalar(
        select(Allocation)
        .where(
            Allocation.project_pk == project.pk,
            Allocation.call_id == call.id,
            Allocation.state.in_(LIVE),
            Allocation.valid_until > now,
        )
        .order_by(Allocation.id)
    )
    if live is not None:
        raise Conflict(
            f"project {project.id} already holds allocation {live.id} from {call.id} "
            f"({live.state}, until {live.valid_until:%Y-%m-%d}); one live allocation per "
            "project and call: ask the factory's operator to top it up or extend it",
            field="call_id",
        )
    pending = session.scalar(
        select(Proposal.id)
        .where(
            Proposal.project_pk == project.pk,
            Proposal.call_id == call.id,
            Proposal.id != proposal.id,
            Proposal.state.in_((ProposalState.SUBMITTED.value, ProposalState.IN_REVIEW.value)),
        )
        .order_by(Proposal.id)
    )
    if pending is not None:
        raise Conflict(
            f"project {project.id} has proposal {pending} to {call.id} waiting for a "
            "decision; one live allocation per project and call",
            field="call_id",
        )


def _check_eligible(
    session: Session, actor: User, catalog: Catalog, proposal: Proposal, now: dt.datetime
) -> None:
    request = GrantRequest(proposal.gpu_hours, proposal.months, proposal.gpu_model)
    org = proposal.project.organisation
    refusals = _refusals(session, actor, catalog, proposal.call, org, request, now)
    if refusals:
        message = "; ".join(r.message for r in refusals)
        raise InvalidInput(f"not eligible: {message}", field=refusals[0].field)


def application_refusals(
    session: Session, actor: User, catalog: Catalog, app: Application, *, now: dt.datetime
) -> list[Refusal]:
    """Every rule `app` breaks, as `apply` would check it on submission, storing nothing:
    what the portal's application form names while the applicant types. The project and
    call must be the actor's to apply with (NotFound / Forbidden otherwise)."""
    project = visible_project(session, actor, app.project_id)
    require_pi(session, actor, project)
    call = get_call(session, app.call_id, field="call_id")
    refusals: list[Refusal] = []
    try:
        gpu_model = _gpu_model(catalog, call, app.gpu_model)
    except InvalidInput as exc:
        refusals.append(Refusal("gpu_model", exc.message))
        gpu_model = None
    request = GrantRequest(app.gpu_hours, app.months, gpu_model)
    refusals += _refusals(session, actor, catalog, call, project.organisation, request, now)
    try:
        clean_text(app.abstract, "abstract", max_len=MAX_ABSTRACT_CHARS, min_len=0, multiline=True)
    except InvalidInput as exc:
        refusals.append(Refusal("abstract", exc.message))
    if not app.declare_civilian_ai_act:
        refusals.append(refused("declare_civilian_ai_act", "declaration"))
    return refusals


def _refusals(
    session: Session,
    actor: User,
    catalog: Catalog,
    call: Call,
    org: Organisation,
    request: GrantRequest,
    now: dt.datetime,
) -> list[Refusal]:
    mode = _mode(catalog, call)
    factory = catalog.factory(call.factory_id)
    refusals: list[Refusal] = [
        refused("project_id", "report_overdue", project=pid, due=f"{due:%Y-%m-%d}")
        for pid, due in overdue_reports(session, actor, now)
    ]
    name = call.id
    if call.state == CallState.CLOSED:
        cutoff = next_cutoff(mode, now.date())
        name += f" ({call.closed_reason or 'closed by the operator'}"
        name += f"; next cut-off {cutoff:%Y-%m-%d})" if cutoff else ")"
    refusals += eligibility_refusals(
        Applicant(org.country, org.type),
        mode,
        request,
        eligible_countries=catalog.eligibility.countries,
        factory_gpu_models=operating_gpu_models(factory) if factory else set(),
        call_open=call.state == CallState.OPEN,
        call_name=name,
    )
    return refusals


def _auto_decide(session: Session, proposal: Proposal, now: dt.datetime) -> None:
    # Lock the call: two automatic decisions never both take the last offered hours (FOR
    # NO KEY UPDATE, as in _check_one_live).
    call = session.scalars(
        select(Call).where(Call.id == proposal.call_id).with_for_update(key_share=True)
    ).one()
    offered = call.offered_gpu_hours
    left = None if offered is None else offered - committed_gpu_hours(session, call)
    if left is not None and proposal.gpu_hours > left:
        proposal.decision_reason = (
            f"{call.id} has {max(left, 0):,.0f} GPU-hours left of what it offers; the "
            "proposal waits for an operator's decision"
        )
        return
    _accept(session, None, proposal, proposal.gpu_hours, "decided automatically", now)
    proposal.auto_decided = True


def decide(
    session: Session,
    actor: User,
    proposal_id: int,
    *,
    accept: bool,
    gpu_hours: float | None,
    reason: str | None,
    now: dt.datetime,
) -> Proposal:
    require_staff(actor, "decide on proposals")
    proposal = get_proposal(session, actor, proposal_id)
    # an operator may see a proposal as a member of its project; deciding is for the
    # operators of the call's factory (and, where it requires MFA, from an MFA sign-in)
    require_operator_of(session, actor, proposal.call.factory_id, "decide on proposals")
    if proposal.state not in (ProposalState.SUBMITTED, ProposalState.IN_REVIEW):
        raise Conflict(f"proposal {proposal.id} is {proposal.state}; nothing to decide", "state")
    if proposal.state == ProposalState.IN_REVIEW:
        status = reviews.status_of(session, proposal)
        if not status.complete:
            raise Conflict(
                f"proposal {proposal.id} has {status.reviews} of the "
                f"{proposal.call.min_reviews} reviews its call needs",
                field="reviews",
            )
        if accept and not status.passes:
            raise Conflict(
                f"average score {status.average:.2f} is below the call's minimum "
                f"{proposal.call.min_average_score}",
                field="reviews",
            )
    if reason is not None:
        reason = clean_text(reason, "reason", max_len=5000, min_len=0, multiline=True) or None
    if not accept:
        if not reason:
            raise InvalidInput("a rejection needs a reason the applicant can read", "reason")
        proposal.state = ProposalState.REJECTED.value
        proposal.decided_at, proposal.decided_by = now, actor.id
        proposal.decision_reason = reason.strip()
        audit.record(
            session,
            actor=actor,
            entity="proposal",
            entity_id=proposal.id,
            action="reject",
            now=now,
            reason=reason,
        )
        _tell_pi(
            session,
            proposal,
            f"Proposal {proposal.id} rejected",
            f"Your proposal {proposal.id} was not accepted. Reason: {reason}",
            "decision",
            now,
        )
        return proposal
    granted = proposal.gpu_hours if gpu_hours is None else gpu_hours
    problem = gpu_hours_problem(granted, maximum=proposal.gpu_hours)
    if problem is not None:
        raise InvalidInput(
            f"grant up to the {proposal.gpu_hours:,.12g} GPU-hours requested: {problem}",
            field="gpu_hours",
        )
    _accept(session, actor, proposal, granted, reason, now)
    return proposal


def _accept(
    session: Session,
    actor: User | None,
    proposal: Proposal,
    granted: float,
    reason: str | None,
    now: dt.datetime,
) -> None:
    proposal.state = ProposalState.ACCEPTED.value
    proposal.decided_at = now
    proposal.decided_by = actor.id if actor else None
    proposal.decided_gpu_hours = granted
    proposal.decision_reason = reason
    allocation = create_allocation(session, actor, proposal, granted, now=now)
    audit.record(
        session,
        actor=actor,
        entity="proposal",
        entity_id=proposal.id,
        action="accept",
        now=now,
        reason=reason,
        gpu_hours=granted,
        allocation=allocation.id,
    )
    _tell_pi(
        session,
        proposal,
        f"Proposal {proposal.id} accepted",
        f"Your proposal {proposal.id} was accepted with {granted:,.0f} GPU-hours on "
        f"{allocation.factory_id}, valid until {allocation.valid_until:%Y-%m-%d}.",
        "decision",
        now,
    )


def withdraw(session: Session, actor: User, proposal_id: int, *, now: dt.datetime) -> Proposal:
    proposal = get_proposal(session, actor, proposal_id)
    require_pi(session, actor, proposal.project)
    if not ProposalState(proposal.state).open:
        raise Conflict(f"proposal {proposal.id} is {proposal.state}", field="state")
    proposal.state = ProposalState.WITHDRAWN.value
    audit.record(
        session, actor=actor, entity="proposal", entity_id=proposal.id, action="withdraw", now=now
    )
    return proposal


def get_proposal(session: Session, actor: User, proposal_id: int) -> Proposal:
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or not may_see(session, actor, proposal):
        raise NotFound(f"no proposal {proposal_id}", field="proposal_id")
    return proposal


def proposal_to_review(session: Session, actor: User, proposal_id: int) -> Proposal:
    """The proposal a review (or a conflict) is about to be given on. Reviewers reach
    proposals in review and those they reviewed (there they learn why they may not review
    one); others only the proposals they may see."""
    if Role(actor.role) is not Role.REVIEWER:
        return get_proposal(session, actor, proposal_id)
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or not (
        proposal.state == ProposalState.IN_REVIEW or reviews.has_reviewed(session, actor, proposal)
    ):
        raise NotFound(f"no proposal {proposal_id} in review", field="proposal_id")
    return proposal


def may_see(session: Session, actor: User, proposal: Proposal) -> bool:
    """Admins, operators of the call's factory, the project's people, and reviewers while
    it is in review."""
    if reviews.may_review(session, actor, proposal):
        return True
    query = select(Proposal.id).where(Proposal.id == proposal.id, proposal_filter(actor))
    return session.scalar(query) is not None


def list_proposals(
    session: Session, actor: User, *, project_id: str | None = None, state: str | None = None
) -> list[Proposal]:
    query = select(Proposal).order_by(Proposal.id)
    if project_id is not None:
        project = visible_project(session, actor, project_id)
        query = query.where(Proposal.project_pk == project.pk)
    query = query.where(proposal_filter(actor))
    if state is not None:
        query = query.where(Proposal.state == state)
    return list(session.scalars(query))


def _tell_pi(
    session: Session, proposal: Proposal, subject: str, body: str, kind: str, now: dt.datetime
) -> None:
    notify.enqueue(
        session,
        to=proposal.project.pi.email,
        subject=f"[Fabbrica] {subject}",
        body=body,
        kind=kind,
        now=now,
    )
