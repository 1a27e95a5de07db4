"""The access services on a real database (SQLite and PostgreSQL): allocation expiry and its
notice (the alerts before it: test_budget_alerts.py), operator changes and their audit
trail, the grant CHECK constraint, round-robin review assignment with conflicts of
interest, and the block on overdue final reports."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fabbrica.api.deps import AppContext
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.identity import Role
from fabbrica.services import identity
from fabbrica.services.access import allocations, audit, calls, projects, proposals, reviews
from fabbrica.services.access.allocations import AllocationChange
from fabbrica.services.access.organisations import create_organisation
from fabbrica.store.models import Allocation, AuditEntry, OutboxEmail, Proposal, Review, User
from tests.conftest import Clock

LARGE_SCALE_CALL = "it4lia-large-scale"
PLAYGROUND_CALL = "it4lia-playground"
START = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)  # the conftest clock's start


@dataclass(frozen=True)
class Applicant:
    pi_id: int
    email: str
    org_id: int
    project_id: str


def new_user(
    ctx: AppContext,
    email: str,
    role: Role = Role.USER,
    name: str = "Someone",
    factories: tuple[str, ...] = (),
) -> int:
    with ctx.db.session() as s:
        user, _ = identity.create_user(
            s,
            email=email,
            name=name,
            role=role,
            now=ctx.clock(),
            factories=factories,
            known_factories={f.id for f in ctx.catalog.factories},
        )
        return user.id


def admin_id(ctx: AppContext) -> int:
    with ctx.db.session() as s:
        found = s.scalar(select(User.id).where(User.email == identity.BOOTSTRAP_EMAIL))
        assert found is not None
        return found


def load_admin(s: Session) -> User:
    admin = s.scalar(select(User).where(User.email == identity.BOOTSTRAP_EMAIL))
    assert admin is not None
    return admin


def load_user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    assert user is not None
    return user


def new_applicant(ctx: AppContext, email: str, *, mode: str = "playground") -> Applicant:
    pi_id = new_user(ctx, email, name=f"PI {email}")
    with ctx.db.session() as s:
        pi = load_user(s, pi_id)
        org = create_organisation(
            s,
            pi,
            ctx.catalog,
            name=f"Org of {email}",
            country="IT",
            type="startup",
            sector=None,
            now=ctx.clock(),
        )
        project = projects.create_project(
            s,
            pi,
            ctx.catalog,
            title=f"Project of {email}",
            org_id=org.id,
            mode=mode,
            now=ctx.clock(),
        )
        assert project.id is not None
        return Applicant(pi_id, email, org.id, project.id)


def new_project(ctx: AppContext, applicant: Applicant, title: str) -> str:
    with ctx.db.session() as s:
        project = projects.create_project(
            s,
            load_user(s, applicant.pi_id),
            ctx.catalog,
            title=title,
            org_id=applicant.org_id,
            mode="playground",
            now=ctx.clock(),
        )
        assert project.id is not None
        return project.id


def apply(
    ctx: AppContext,
    applicant: Applicant,
    *,
    call_id: str = PLAYGROUND_CALL,
    gpu_hours: float = 1000,
    months: int = 1,
    project_id: str | None = None,
) -> int:
    with ctx.db.session() as s:
        proposal = proposals.apply(
            s,
            load_user(s, applicant.pi_id),
            ctx.catalog,
            proposals.Application(
                project_id=project_id or applicant.project_id,
                call_id=call_id,
                gpu_hours=gpu_hours,
                months=months,
                declare_civilian_ai_act=True,
            ),
            now=ctx.clock(),
        )
        return proposal.id


def allocation_for(ctx: AppContext, proposal_id: int) -> Allocation:
    with ctx.db.session() as s:
        allocation = allocations.for_proposal(s, proposal_id)
        assert allocation is not None
        return allocation


def load_allocation(ctx: AppContext, allocation_id: int) -> Allocation:
    with ctx.db.session() as s:
        allocation = s.get(Allocation, allocation_id)
        assert allocation is not None
        return allocation


def expiry_emails(ctx: AppContext) -> list[OutboxEmail]:
    with ctx.db.session() as s:
        query = select(OutboxEmail).where(OutboxEmail.kind == "expiry").order_by(OutboxEmail.id)
        return list(s.scalars(query))


def run_expiry(ctx: AppContext, now: dt.datetime) -> int:
    with ctx.db.session() as s:
        return allocations.expire(s, now)


def history(ctx: AppContext, entity: str, entity_id: object) -> list[AuditEntry]:
    with ctx.db.session() as s:
        return audit.history(s, entity, entity_id)


@pytest.fixture
def granted(ctx: AppContext) -> tuple[Applicant, Allocation]:
    """A startup PI whose 1,000 GPU-hours for 1 month on the playground were granted."""
    applicant = new_applicant(ctx, "pi@startup.it")
    allocation = allocation_for(ctx, apply(ctx, applicant))
    assert allocation.valid_until == dt.datetime(2026, 12, 21, 12, 0, tzinfo=dt.UTC)
    assert allocation.final_report_due == dt.datetime(2027, 3, 21, 12, 0, tzinfo=dt.UTC)
    assert allocation.state == "active"
    return applicant, allocation


# --- expiry and notices ---------------------------------------------------------------------


def test_expiry_at_the_end_tells_the_pi_once(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    applicant, allocation = granted
    end = allocation.valid_until

    assert run_expiry(ctx, end - dt.timedelta(days=20)) == 0
    assert run_expiry(ctx, end - dt.timedelta(minutes=1)) == 0
    assert expiry_emails(ctx) == []
    assert run_expiry(ctx, end) == 1  # the end itself is past: expired
    assert run_expiry(ctx, end + dt.timedelta(days=1)) == 0
    assert run_expiry(ctx, end + dt.timedelta(days=40)) == 0

    [email] = expiry_emails(ctx)
    assert email.to_address == applicant.email
    assert email.sent_at is None
    assert email.subject == (
        f"[Fabbrica] Allocation {allocation.id} of {applicant.project_id} has expired"
    )
    assert "1,000 GPU-hours" in email.body
    assert "has expired (end: 2026-12-21)" in email.body
    assert "The final report is due by 2027-03-21." in email.body
    stored = load_allocation(ctx, allocation.id)
    assert stored.state == "expired"
    [expire] = [e for e in history(ctx, "allocation", allocation.id) if e.action == "expire"]
    assert expire.actor_id is None
    assert expire.at == end


def test_the_expiry_step_uses_its_clock(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    step = allocations.ExpiryStep(ctx.db, clock)
    assert step() == 0
    clock.now = allocation.valid_until + dt.timedelta(hours=1)
    assert step() == 1
    assert load_allocation(ctx, allocation.id).state == "expired"
    assert len(expiry_emails(ctx)) == 1
    assert step() == 0


def test_suspended_allocations_expire_terminated_ones_get_no_notice(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    applicant, suspended = granted
    second_project = new_project(ctx, applicant, "Second project")
    other = allocation_for(ctx, apply(ctx, applicant, months=1, project_id=second_project))
    staff = admin_id(ctx)
    with ctx.db.session() as s:
        actor = load_user(s, staff)
        allocations.change(
            s, actor, suspended.id, AllocationChange("suspend", "misuse"), now=clock()
        )
        allocations.change(s, actor, other.id, AllocationChange("terminate", "done"), now=clock())
    assert run_expiry(ctx, suspended.valid_until - dt.timedelta(days=5)) == 0
    assert run_expiry(ctx, suspended.valid_until + dt.timedelta(days=1)) == 1
    assert load_allocation(ctx, suspended.id).state == "expired"
    assert load_allocation(ctx, other.id).state == "terminated"
    assert [e.subject.split(" ")[2] for e in expiry_emails(ctx)] == [str(suspended.id)]


# --- operator changes and the audit log --------------------------------------------------------


def change(
    ctx: AppContext, actor_id: int, allocation_id: int, what: AllocationChange
) -> Allocation:
    with ctx.db.session() as s:
        return allocations.change(s, load_user(s, actor_id), allocation_id, what, now=ctx.clock())


def test_operator_changes_are_applied_and_audited_with_before_and_after(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    operator = new_user(ctx, "op@cineca.it", Role.OPERATOR, "Operator", ("it4lia",))

    clock.advance(days=1)
    extended = change(
        ctx, operator, allocation.id, AllocationChange("extend", "  delays  ", months=2)
    )
    assert extended.valid_until == dt.datetime(2027, 2, 21, 12, 0, tzinfo=dt.UTC)
    assert extended.final_report_due == dt.datetime(2027, 5, 21, 12, 0, tzinfo=dt.UTC)
    until = dt.datetime(2027, 3, 31, 0, 0, tzinfo=dt.UTC)
    assert (
        change(
            ctx, operator, allocation.id, AllocationChange("extend", "to March", until=until)
        ).valid_until
        == until
    )
    topped = change(
        ctx, operator, allocation.id, AllocationChange("top_up", "scaling", gpu_hours=500.5)
    )
    assert topped.granted_gpu_hours == 1500.5
    assert (
        change(ctx, operator, allocation.id, AllocationChange("suspend", "security")).state
        == "suspended"
    )
    assert (
        change(
            ctx,
            operator,
            allocation.id,
            AllocationChange("top_up", "ok while suspended", gpu_hours=1),
        ).granted_gpu_hours
        == 1501.5
    )
    assert (
        change(ctx, operator, allocation.id, AllocationChange("resume", "fixed")).state == "active"
    )
    clock.advance(days=10)
    ended = change(ctx, operator, allocation.id, AllocationChange("terminate", "project closed"))
    assert ended.state == "terminated"
    assert ended.valid_until == clock()
    assert ended.final_report_due == dt.datetime(2027, 3, 2, 12, 0, tzinfo=dt.UTC)

    entries = history(ctx, "allocation", allocation.id)
    assert [e.action for e in entries] == [
        "create",
        "extend",
        "extend",
        "top_up",
        "suspend",
        "top_up",
        "resume",
        "terminate",
    ]
    changes = entries[1:]
    assert {e.actor_id for e in changes} == {operator}
    assert [e.reason for e in changes] == [
        "delays",
        "to March",
        "scaling",
        "security",
        "ok while suspended",
        "fixed",
        "project closed",
    ]
    details = [json.loads(e.detail) for e in changes]
    assert details[0] == {
        "before": {
            "state": "active",
            "granted_gpu_hours": 1000.0,
            "valid_until": "2026-12-21T12:00:00+00:00",
        },
        "after": {
            "state": "active",
            "granted_gpu_hours": 1000.0,
            "valid_until": "2027-02-21T12:00:00+00:00",
        },
    }
    assert details[2]["before"]["granted_gpu_hours"] == 1000.0
    assert details[2]["after"]["granted_gpu_hours"] == 1500.5
    assert (details[3]["before"]["state"], details[3]["after"]["state"]) == ("active", "suspended")
    assert (details[5]["before"]["state"], details[5]["after"]["state"]) == ("suspended", "active")
    assert details[6]["before"]["valid_until"] == "2027-03-31T00:00:00+00:00"
    assert details[6]["after"] == {
        "state": "terminated",
        "granted_gpu_hours": 1501.5,
        "valid_until": "2026-12-02T12:00:00+00:00",
    }
    # each pair chains: the after of one change is the before of the next
    for earlier, later in itertools.pairwise(details):
        assert earlier["after"] == later["before"]


@pytest.mark.parametrize(
    ("what", "state"),
    [
        (AllocationChange("top_up", "r", gpu_hours=10), "terminated"),
        (AllocationChange("extend", "r", months=1), "terminated"),
        (AllocationChange("suspend", "r"), "terminated"),
        (AllocationChange("resume", "r"), "terminated"),
        (AllocationChange("terminate", "r"), "terminated"),
        (AllocationChange("resume", "r"), "active"),
        (AllocationChange("suspend", "r"), "suspended"),
        (AllocationChange("top_up", "r", gpu_hours=10), "expired"),
        (AllocationChange("terminate", "r"), "expired"),
        (AllocationChange("suspend", "r"), "expired"),
    ],
    ids=lambda v: v.action if isinstance(v, AllocationChange) else v,
)
def test_a_change_the_state_does_not_allow_is_a_conflict_and_changes_nothing(
    ctx: AppContext, granted: tuple[Applicant, Allocation], what: AllocationChange, state: str
) -> None:
    _, allocation = granted
    staff = admin_id(ctx)
    if state == "terminated":
        change(ctx, staff, allocation.id, AllocationChange("terminate", "setup"))
    elif state == "suspended":
        change(ctx, staff, allocation.id, AllocationChange("suspend", "setup"))
    elif state == "expired":
        run_expiry(ctx, allocation.valid_until)
    before = load_allocation(ctx, allocation.id)
    assert before.state == state
    audited = len(history(ctx, "allocation", allocation.id))

    with pytest.raises(Conflict) as err:
        change(ctx, staff, allocation.id, what)
    assert err.value.field == "state"
    assert state in err.value.message

    after = load_allocation(ctx, allocation.id)
    assert (after.state, after.granted_gpu_hours, after.valid_until) == (
        before.state,
        before.granted_gpu_hours,
        before.valid_until,
    )
    assert len(history(ctx, "allocation", allocation.id)) == audited


def test_an_expired_allocation_extended_is_active_again(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    clock.now = allocation.valid_until + dt.timedelta(days=2)
    run_expiry(ctx, clock())
    until = clock() + dt.timedelta(days=30)
    extended = change(
        ctx, admin_id(ctx), allocation.id, AllocationChange("extend", "grace", until=until)
    )
    assert (extended.state, extended.valid_until) == ("active", until)


def test_extend_to_a_date_without_a_time_zone_is_invalid_input(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    with pytest.raises(InvalidInput) as err:
        change(
            ctx,
            admin_id(ctx),
            allocation.id,
            AllocationChange("extend", "r", until=dt.datetime(2030, 1, 1)),
        )
    assert err.value.field == "until"


def test_extend_to_the_end_of_time_is_invalid_input(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    until = dt.datetime(9999, 12, 1, tzinfo=dt.UTC)
    with pytest.raises(InvalidInput) as err:
        change(ctx, admin_id(ctx), allocation.id, AllocationChange("extend", "r", until=until))
    assert err.value.field == "until"


@pytest.mark.parametrize(
    ("what", "field"),
    [
        (AllocationChange("extend", "r"), "until"),
        (AllocationChange("extend", "r", months=0), "until"),
        (AllocationChange("extend", "r", months=-1), "until"),
        (AllocationChange("extend", "r", until=dt.datetime(2026, 12, 1, tzinfo=dt.UTC)), "until"),
        (
            AllocationChange("extend", "r", until=dt.datetime(2026, 12, 21, 12, tzinfo=dt.UTC)),
            "until",
        ),
        (AllocationChange("top_up", "r"), "gpu_hours"),
        (AllocationChange("top_up", "r", gpu_hours=0), "gpu_hours"),
        (AllocationChange("top_up", "r", gpu_hours=-5), "gpu_hours"),
        (AllocationChange("top_up", "r", gpu_hours=math.nan), "gpu_hours"),
        (AllocationChange("top_up", "r", gpu_hours=math.inf), "gpu_hours"),
        (AllocationChange("top_up", "r", gpu_hours=2e7), "gpu_hours"),
        (AllocationChange("delete", "r"), "action"),
        (AllocationChange("suspend", "   "), "reason"),
        (AllocationChange("suspend", "bad\x00reason"), "reason"),
        (AllocationChange("suspend", "x" * 2001), "reason"),
    ],
)
def test_invalid_changes_are_refused_naming_the_field(
    ctx: AppContext, granted: tuple[Applicant, Allocation], what: AllocationChange, field: str
) -> None:
    _, allocation = granted
    with pytest.raises(InvalidInput) as err:
        change(ctx, admin_id(ctx), allocation.id, what)
    assert err.value.field == field
    stored = load_allocation(ctx, allocation.id)
    assert (stored.state, stored.granted_gpu_hours) == ("active", 1000.0)
    assert [e.action for e in history(ctx, "allocation", allocation.id)] == ["create"]


def test_only_staff_change_allocations(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    applicant, allocation = granted
    reviewer = new_user(ctx, "rev@uni.eu", Role.REVIEWER)
    for who in (applicant.pi_id, reviewer):
        with pytest.raises(Forbidden):
            change(
                ctx, who, allocation.id, AllocationChange("top_up", "more please", gpu_hours=1e6)
            )
    with pytest.raises(NotFound) as err:
        change(ctx, admin_id(ctx), allocation.id + 1000, AllocationChange("suspend", "r"))
    assert err.value.field == "allocation_id"
    assert load_allocation(ctx, allocation.id).granted_gpu_hours == 1000.0


# --- the CHECK constraints, enforced by the database --------------------------------------------


@pytest.mark.parametrize(
    ("used", "reserved"),
    [(0.0, 1000.5), (1000.0, 1.0), (600.0, 401.0), (-1.0, 0.0), (0.0, -1.0)],
)
def test_the_database_refuses_usage_beyond_the_grant(
    ctx: AppContext, granted: tuple[Applicant, Allocation], used: float, reserved: float
) -> None:
    _, allocation = granted
    with pytest.raises(IntegrityError), ctx.db.session() as s:
        row = s.get(Allocation, allocation.id)
        assert row is not None
        row.used_gpu_hours, row.reserved_gpu_hours = used, reserved
        s.flush()
    stored = load_allocation(ctx, allocation.id)
    assert (stored.used_gpu_hours, stored.reserved_gpu_hours) == (0.0, 0.0)


def test_the_database_accepts_usage_up_to_the_grant(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    with ctx.db.session() as s:
        row = s.get(Allocation, allocation.id)
        assert row is not None
        row.used_gpu_hours, row.reserved_gpu_hours = 600.0, 400.0
    stored = load_allocation(ctx, allocation.id)
    assert (stored.used_gpu_hours, stored.reserved_gpu_hours) == (600.0, 400.0)


# --- review assignment -------------------------------------------------------------------------


def call_reviewers(ctx: AppContext, n: int, call_id: str = LARGE_SCALE_CALL) -> list[int]:
    ids = [new_user(ctx, f"reviewer{i}@panel.eu", Role.REVIEWER, f"R{i}") for i in range(n)]
    with ctx.db.session() as s:
        admin = load_admin(s)
        for user_id in ids:
            calls.add_reviewer(s, admin, call_id, user_id, ctx.clock())
    return ids


def reviews_for(ctx: AppContext, proposal_id: int) -> list[Review]:
    with ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        return reviews.reviews_of(s, proposal)


def apply_large_scale(ctx: AppContext, applicant: Applicant) -> int:
    return apply(ctx, applicant, call_id=LARGE_SCALE_CALL, gpu_hours=60000, months=6)


def proposal_state(ctx: AppContext, proposal_id: int) -> str:
    with ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        return proposal.state


def test_round_robin_spreads_proposals_over_the_calls_reviewers(ctx: AppContext) -> None:
    panel = call_reviewers(ctx, 3)
    outsider = new_user(ctx, "outsider@panel.eu", Role.REVIEWER)
    with ctx.db.session() as s:
        assert calls.reviewers_of(s, calls.get_call(s, LARGE_SCALE_CALL)) == sorted(panel)

    load: Counter[int] = Counter()
    assigned: list[set[int]] = []
    for i in range(3):
        applicant = new_applicant(ctx, f"pi{i}@startup{i}.it", mode="large_scale")
        proposal_id = apply_large_scale(ctx, applicant)
        assert proposal_state(ctx, proposal_id) == "in_review"
        found = reviews_for(ctx, proposal_id)
        assert [r.state for r in found] == ["assigned", "assigned"]
        assert all(r.score is None and r.assigned_at == START for r in found)
        who = {r.reviewer_id for r in found}
        assert len(who) == 2
        assert who <= set(panel)
        load.update(who)
        assigned.append(who)
        # balanced after every proposal: no reviewer has two more than another
        assert max(load[r] for r in panel) - min(load[r] for r in panel) <= 1
    assert load == Counter(dict.fromkeys(panel, 2))
    assert outsider not in load
    assert len({frozenset(w) for w in assigned}) == 3  # every pair once


def test_round_robin_skips_a_reviewer_in_the_applicants_project(
    ctx: AppContext, clock: Clock
) -> None:
    first, second, third = call_reviewers(ctx, 3)
    applicant = new_applicant(ctx, "pi@startup.it", mode="large_scale")
    with ctx.db.session() as s:
        _, secret = projects.invite(
            s,
            load_user(s, applicant.pi_id),
            project_id=applicant.project_id,
            email="reviewer0@panel.eu",
            now=clock(),
        )
    with ctx.db.session() as s:
        projects.accept(s, load_user(s, first), token=secret, now=clock())

    proposal_id = apply_large_scale(ctx, applicant)
    # the first reviewer has the lowest id and no load, but is a member of the project
    assert {r.reviewer_id for r in reviews_for(ctx, proposal_id)} == {second, third}
    with pytest.raises(Conflict) as err, ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        reviews.assign(s, load_admin(s), proposal, first, now=clock())
    assert err.value.field == "reviewer_id"
    assert "member of the applicant's project" in err.value.message
    with pytest.raises(Forbidden), ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        reviews.submit_review(s, load_user(s, first), proposal, score=5, comment=None, now=clock())


def test_a_declared_conflict_brings_in_another_reviewer(ctx: AppContext, clock: Clock) -> None:
    panel = call_reviewers(ctx, 3)
    applicant = new_applicant(ctx, "pi@startup.it", mode="large_scale")
    proposal_id = apply_large_scale(ctx, applicant)
    before = {r.reviewer_id for r in reviews_for(ctx, proposal_id)}
    assert before == set(panel[:2])
    leaving = panel[0]

    clock.advance(hours=1)
    with ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        reviews.declare_conflict(
            s, load_user(s, leaving), proposal, reason="I co-authored with the PI", now=clock()
        )

    found = {r.reviewer_id: r for r in reviews_for(ctx, proposal_id)}
    assert set(found) == set(panel)
    assert found[leaving].state == "conflict"
    assert found[leaving].conflict_reason == "I co-authored with the PI"
    assert found[panel[1]].state == "assigned"
    assert found[panel[2]].state == "assigned"
    assert found[panel[2]].assigned_at == clock()
    [entry] = [e for e in history(ctx, "proposal", proposal_id) if e.action == "declare_conflict"]
    assert (entry.actor_id, entry.reason) == (leaving, "I co-authored with the PI")

    with pytest.raises(Forbidden) as err, ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        reviews.submit_review(
            s, load_user(s, leaving), proposal, score=5, comment=None, now=clock()
        )
    assert "I co-authored with the PI" in err.value.message

    # the two reviewers left can decide it
    with ctx.db.session() as s:
        proposal = s.get(Proposal, proposal_id)
        assert proposal is not None
        for reviewer, score in ((panel[1], 4), (panel[2], 3)):
            reviews.submit_review(
                s, load_user(s, reviewer), proposal, score=score, comment="fine", now=clock()
            )
        status = reviews.status_of(s, proposal)
    assert (status.reviews, status.average, status.complete, status.passes) == (2, 3.5, True, True)


# --- overdue final reports ----------------------------------------------------------------------


def proposal_count(ctx: AppContext) -> int:
    with ctx.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Proposal)) or 0)


def test_an_overdue_final_report_blocks_new_applications_until_it_is_submitted(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    applicant, allocation = granted
    other_project = new_project(ctx, applicant, "Second project")

    clock.now = allocation.final_report_due  # due, not yet overdue
    apply(ctx, applicant, project_id=other_project)
    assert proposal_count(ctx) == 2

    clock.advance(days=1)
    with pytest.raises(InvalidInput) as err:
        apply(ctx, applicant, project_id=other_project)
    assert err.value.field == "project_id"
    assert (
        f"the final report of project {applicant.project_id} is overdue (due 2027-03-21)"
        in err.value.message
    )
    assert other_project not in err.value.message
    assert proposal_count(ctx) == 2  # the refused proposal is not kept

    with pytest.raises(InvalidInput) as short, ctx.db.session() as s:
        allocations.submit_final_report(
            s, load_user(s, applicant.pi_id), allocation.id, text="too short", now=clock()
        )
    assert short.value.field == "text"
    with ctx.db.session() as s:
        allocations.submit_final_report(
            s,
            load_user(s, applicant.pi_id),
            allocation.id,
            text="We trained three models.\nResults are in the paper.",
            now=clock(),
        )
    reported = load_allocation(ctx, allocation.id)
    assert reported.final_report == "We trained three models.\nResults are in the paper."
    assert reported.final_report_at == clock()

    # (other_project holds a live Playground allocation now: a third project applies)
    third_project = new_project(ctx, applicant, "Third project")
    proposal_id = apply(ctx, applicant, project_id=third_project)
    assert proposal_state(ctx, proposal_id) == "accepted"
    assert proposal_count(ctx) == 3


def test_the_overdue_block_comes_first_among_other_refusals(
    ctx: AppContext, clock: Clock, granted: tuple[Applicant, Allocation]
) -> None:
    applicant, allocation = granted
    clock.now = allocation.final_report_due + dt.timedelta(days=1)
    with pytest.raises(InvalidInput) as err:
        apply(ctx, applicant, gpu_hours=9999, months=7)
    assert err.value.field == "project_id"
    message = err.value.message
    assert message.startswith("not eligible: the final report of project")
    assert "Playground grants at most 5,000 GPU-hours; 9,999 requested" in message
    assert "Playground offers 1, 2, 3 months, not 7" in message


def test_only_the_pi_submits_the_final_report(
    ctx: AppContext, granted: tuple[Applicant, Allocation]
) -> None:
    _, allocation = granted
    for who in (admin_id(ctx), new_user(ctx, "stranger@example.org")):
        with pytest.raises((Forbidden, NotFound)), ctx.db.session() as s:
            allocations.submit_final_report(
                s, load_user(s, who), allocation.id, text="x" * 40, now=ctx.clock()
            )
    assert load_allocation(ctx, allocation.id).final_report is None
