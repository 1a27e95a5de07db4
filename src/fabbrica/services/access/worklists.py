"""What a reviewer and an operator have to do, as the portal shows it: a reviewer's
assigned proposals; an operator's decision queue, ordered by decision deadline (the
mode's target in working days of the factory's country, docs/reporting.md), the calls and
allocations of the factories they operate, and their site agents with the jobs lost there.

The same rules as the API's: staff only, operators scoped to their own factories (another
factory's proposal is not found), reviewers reach only what they were assigned.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from fabbrica.catalog.model import Catalog
from fabbrica.core.access import AllocationState, Intake, ProposalState, ReviewStatus, next_cutoff
from fabbrica.core.errors import NotFound
from fabbrica.core.identity import Role
from fabbrica.core.jobs import JobState
from fabbrica.core.workdays import add_working_days, working_days
from fabbrica.services import agents
from fabbrica.services.access import reviews
from fabbrica.services.access.visibility import in_operated, require_staff
from fabbrica.store.models import Agent, Allocation, Call, Job, Project, Proposal, Review, User

WAITING = (ProposalState.SUBMITTED.value, ProposalState.IN_REVIEW.value)


# --- reviewers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """A proposal assigned to a reviewer, with the reviewer's own review (never others')."""

    proposal: Proposal
    review: Review


def assignments(session: Session, reviewer: User) -> list[Assignment]:
    """The proposals assigned to `reviewer` (still to review first, then the rest)."""
    if Role(reviewer.role) is not Role.REVIEWER:
        raise NotFound("no proposals to review")
    rows = session.execute(
        select(Proposal, Review)
        .join(Review, Review.proposal_id == Proposal.id)
        .where(Review.reviewer_id == reviewer.id)
        .order_by(Proposal.submitted_at, Proposal.id)
        .options(selectinload(Proposal.project), selectinload(Proposal.call))
    ).all()
    found = [Assignment(p, r) for p, r in rows]
    return sorted(found, key=lambda a: (a.review.state != reviews.ASSIGNED, a.proposal.id))


def assignment(session: Session, reviewer: User, proposal_id: int) -> Assignment:
    """One proposal assigned to `reviewer`; not found for any other (and for non-reviewers)."""
    if Role(reviewer.role) is Role.REVIEWER:
        row = session.execute(
            select(Proposal, Review)
            .join(Review, Review.proposal_id == Proposal.id)
            .where(Review.reviewer_id == reviewer.id, Proposal.id == proposal_id)
        ).first()
        if row is not None:
            return Assignment(row[0], row[1])
    raise NotFound(f"no proposal {proposal_id} assigned to you", field="proposal_id")


# --- operators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    """A proposal waiting for a decision, with its clock."""

    proposal: Proposal
    target: int | None  # the mode's decision target, in working days (None: none set)
    elapsed: int  # working days counted so far
    deadline: dt.date | None
    reviews: ReviewStatus | None  # for proposals in review

    @property
    def left(self) -> int | None:
        return None if self.target is None else self.target - self.elapsed

    @property
    def late(self) -> bool:
        return self.left is not None and self.left < 0


def clock_start(catalog: Catalog, mode_id: str, submitted: dt.datetime) -> dt.date:
    """The day a decision clock counts from: the submission's UTC date, or for a cut-off
    mode the day before the cut-off after it (the cut-off day is the first counted), as
    the federation report counts decision times."""
    begin = submitted.astimezone(dt.UTC).date()
    mode = catalog.access_mode(mode_id)
    if mode is not None and mode.intake is Intake.CUTOFFS:
        cutoff = next_cutoff(mode, begin)
        if cutoff is not None:
            begin = cutoff - dt.timedelta(days=1)
    return begin


@dataclass(frozen=True)
class DecisionQueue:
    """The first entries of a decision queue, and how many wait after them."""

    entries: list[QueueEntry]
    more: int


def decision_queue(
    session: Session,
    actor: User,
    catalog: Catalog,
    *,
    now: dt.datetime,
    shown: int = 100,
    limit: int = 2000,
) -> DecisionQueue:
    """The proposals waiting for a decision at the factories `actor` operates (an admin:
    all), the nearest decision deadline first, those without a target last: the first
    `shown` of them (of the `limit` submitted first), and how many more wait.

    The clocks are counted on plain rows; only the proposals shown are loaded whole, with
    their projects, organisations and review status (a few queries, never one a row)."""
    require_staff(actor, "see the decision queue")
    rows = session.execute(
        select(Proposal.id, Proposal.submitted_at, Call.mode, Call.factory_id)
        .join(Call, Call.id == Proposal.call_id)
        .where(
            Proposal.state.in_(WAITING),
            Proposal.submitted_at.is_not(None),
            in_operated(actor, Call.factory_id),
        )
        .order_by(Proposal.submitted_at, Proposal.id)
        .limit(limit)
    ).all()
    today = now.astimezone(dt.UTC).date()
    # many proposals share a mode, a factory's country and a day: each clock counted once
    starts: dict[tuple[str, dt.date], dt.date] = {}
    counts: dict[tuple[dt.date, str, int | None], tuple[int, dt.date | None]] = {}
    clocks = []
    for proposal_id, submitted_at, mode_id, factory_id in rows:
        submitted = submitted_at or now  # never None: the query asks for submitted ones
        factory = catalog.factory(factory_id)
        country = factory.country if factory else ""
        mode = catalog.access_mode(mode_id)
        target = mode.decision_target_working_days if mode else None
        start_key = (mode_id, submitted.astimezone(dt.UTC).date())
        if start_key not in starts:
            starts[start_key] = clock_start(catalog, mode_id, submitted)
        begin = starts[start_key]
        count_key = (begin, country, target)
        if count_key not in counts:
            counts[count_key] = (
                working_days(begin, today, country),
                None if target is None else add_working_days(begin, target, country),
            )
        elapsed, deadline = counts[count_key]
        clocks.append((proposal_id, target, elapsed, deadline))
    clocks.sort(key=lambda c: (c[3] is None, c[3] or today, c[0]))
    first = clocks[:shown]
    loaded = {
        p.id: p
        for p in session.scalars(
            select(Proposal)
            .where(Proposal.id.in_([c[0] for c in first]))
            .options(
                selectinload(Proposal.call),
                selectinload(Proposal.project).selectinload(Project.organisation),
            )
        )
    }
    statuses = reviews.statuses_of(
        session, [p for p in loaded.values() if p.state == ProposalState.IN_REVIEW]
    )
    entries = [
        QueueEntry(
            proposal=loaded[proposal_id],
            target=target,
            elapsed=elapsed,
            deadline=deadline,
            reviews=statuses.get(proposal_id),
        )
        for proposal_id, target, elapsed, deadline in first
    ]
    return DecisionQueue(entries, len(clocks) - len(first))


def operated_calls(session: Session, actor: User) -> list[Call]:
    """Every call (open or closed) of the factories `actor` operates (an admin: all)."""
    require_staff(actor, "manage calls")
    query = select(Call).where(in_operated(actor, Call.factory_id))
    return list(session.scalars(query.order_by(Call.factory_id, Call.mode)))


def operated_allocations(session: Session, actor: User, *, limit: int = 500) -> list[Allocation]:
    """The allocations at the factories `actor` operates (an admin: all), live ones first,
    then by the nearest end."""
    require_staff(actor, "manage allocations")
    live = Allocation.state.in_((AllocationState.ACTIVE.value, AllocationState.SUSPENDED.value))
    query = (
        select(Allocation)
        .where(in_operated(actor, Allocation.factory_id))
        .order_by(case((live, 0), else_=1), Allocation.valid_until, Allocation.id)
        .limit(limit)
        .options(selectinload(Allocation.project))
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class SiteStatus:
    """A factory's site agent as an operator follows it."""

    agent: Agent
    lost_jobs: int  # jobs lost there, waiting again or given up
    capacity: list[dict[str, Any]]  # per partition, as the agent last reported it

    @property
    def total_gpus(self) -> int:
        return sum(int(p.get("total_gpus", 0)) for p in self.capacity)

    @property
    def free_gpus(self) -> int:
        return sum(int(p.get("free_gpus", 0)) for p in self.capacity)


def site_status(session: Session, actor: User) -> list[SiteStatus]:
    """The site agents of the factories `actor` operates, with the jobs lost at each: those
    queued again after the factory lost them, and those given up as lost."""
    found = agents.list_agents(session, actor)  # staff only, scoped
    requeued = session.execute(
        select(Job.reason, func.count())
        .where(Job.state == JobState.QUEUED.value, Job.reason.like("lost at %"))
        .group_by(Job.reason)
    ).all()
    counts: dict[str, int] = {}
    for reason, count in requeued:
        factory = str(reason).removeprefix("lost at ").split(";", 1)[0].split(":", 1)[0]
        counts[factory] = counts.get(factory, 0) + count
    given_up = session.execute(
        select(Job.factory_id, func.count())
        .where(Job.state == JobState.LOST.value, in_operated(actor, Job.factory_id))
        .group_by(Job.factory_id)
    ).all()
    for site, count in given_up:
        counts[str(site)] = counts.get(str(site), 0) + count
    return [
        SiteStatus(agent, counts.get(agent.factory_id, 0), _partitions(agent.capacity))
        for agent in found
    ]


def _partitions(text: str) -> list[dict[str, Any]]:
    try:
        found = json.loads(text or "[]")
    except ValueError:
        return []
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def operated_proposal(session: Session, actor: User, proposal_id: int) -> Proposal:
    """A proposal to a call of a factory `actor` operates; not found for any other (even
    one `actor` may see as a project member: deciding is for that factory's operators)."""
    require_staff(actor, "decide on proposals")
    proposal = session.scalar(
        select(Proposal)
        .join(Call, Call.id == Proposal.call_id)
        .where(Proposal.id == proposal_id, in_operated(actor, Call.factory_id))
    )
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}", field="proposal_id")
    return proposal


def reviewer_names(session: Session, actor: User, proposal: Proposal) -> dict[int, str]:
    """Who wrote which review of `proposal`: for its factory's operators only."""
    operated_proposal(session, actor, proposal.id)
    ids = select(Review.reviewer_id).where(Review.proposal_id == proposal.id)
    return {
        u.id: f"{u.name} <{u.email}>" for u in session.scalars(select(User).where(User.id.in_(ids)))
    }


def operated_call(session: Session, actor: User, call_id: str) -> Call:
    """A call of a factory `actor` operates; not found for any other."""
    require_staff(actor, "manage calls")
    call = session.scalar(
        select(Call).where(Call.id == call_id, in_operated(actor, Call.factory_id))
    )
    if call is None:
        raise NotFound(f"no call {call_id!r} of yours", field="call_id")
    return call


def operated_allocation(session: Session, actor: User, allocation_id: int) -> Allocation:
    """An allocation at a factory `actor` operates; not found for any other."""
    require_staff(actor, "manage allocations")
    allocation = session.scalar(
        select(Allocation).where(
            Allocation.id == allocation_id, in_operated(actor, Allocation.factory_id)
        )
    )
    if allocation is None:
        raise NotFound(f"no allocation {allocation_id}", field="allocation_id")
    return allocation
