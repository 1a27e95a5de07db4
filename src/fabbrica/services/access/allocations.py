"""Allocations: GPU-hours on a factory for a project, valid from..until.

granted, reserved and used GPU-hours with used + reserved <= granted (a CHECK constraint
too); operators extend, top up, suspend, resume and terminate; every change is audited.
Expiry is automatic (the PI is told); the budget alerts before it (GPU-hours used, days
left) are services/alerts.py's. A final report is due within 3 months of the end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from fabbrica.core.access import LIVE, MAX_GPU_HOURS, AllocationState, add_months
from fabbrica.core.billing import gpu_hours_problem
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.text import clean_text
from fabbrica.services import alerts, notify
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import (
    allocation_filter,
    is_staff,
    require_operator_of,
    require_pi,
    require_staff,
    visible_project,
)
from fabbrica.store.db import Database
from fabbrica.store.models import Allocation, Project, Proposal, User

REPORT_DUE_MONTHS = 3
MAX_REPORT_CHARS = 200_000
MAX_EXTENSION = dt.timedelta(days=10 * 365)


def create_allocation(
    session: Session, actor: User | None, proposal: Proposal, granted: float, *, now: dt.datetime
) -> Allocation:
    call = proposal.call
    valid_until = add_months(now, proposal.months)
    allocation = Allocation(
        project_pk=proposal.project_pk,
        proposal_id=proposal.id,
        call_id=call.id,
        factory_id=call.factory_id,
        gpu_model=proposal.gpu_model,
        granted_gpu_hours=granted,
        used_gpu_hours=0.0,
        reserved_gpu_hours=0.0,
        valid_from=now,
        valid_until=valid_until,
        state=AllocationState.ACTIVE.value,
        final_report_due=add_months(valid_until, REPORT_DUE_MONTHS),
        created_at=now,
    )
    session.add(allocation)
    session.flush()
    audit.record(
        session,
        actor=actor,
        entity="allocation",
        entity_id=allocation.id,
        action="create",
        now=now,
        gpu_hours=granted,
        proposal=proposal.id,
    )
    return allocation


def in_force(now: dt.datetime | BindParameter[dt.datetime]) -> Select[Allocation]:
    """Allocations that jobs may charge now: active and within their validity."""
    return select(Allocation).where(
        Allocation.state == AllocationState.ACTIVE.value,
        Allocation.valid_from <= now,
        Allocation.valid_until > now,
    )


def list_allocations(
    session: Session, actor: User, *, project_id: str | None = None
) -> list[Allocation]:
    query = select(Allocation).order_by(Allocation.id)
    if project_id is not None:
        project = visible_project(session, actor, project_id)
        query = query.where(Allocation.project_pk == project.pk)
    query = query.where(allocation_filter(actor))
    return list(session.scalars(query))


def get_allocation(session: Session, actor: User, allocation_id: int) -> Allocation:
    allocation = session.get(Allocation, allocation_id)
    seen = select(Allocation.id).where(Allocation.id == allocation_id, allocation_filter(actor))
    if allocation is None or session.scalar(seen) is None:
        raise NotFound(f"no allocation {allocation_id}", field="allocation_id")
    return allocation


@dataclass(frozen=True)
class AllocationChange:
    """One operator action: extend (months or until), top_up, suspend, resume, terminate."""

    action: str
    reason: str
    months: int | None = None
    until: dt.datetime | None = None
    gpu_hours: float | None = None


def change(
    session: Session, actor: User, allocation_id: int, change: AllocationChange, *, now: dt.datetime
) -> Allocation:
    require_staff(actor, "change allocations")
    allocation = get_allocation(session, actor, allocation_id)
    # an operator may see an allocation as a member of its project; changing it is for the
    # operators of its factory
    require_operator_of(session, actor, allocation.factory_id, "change allocations")
    reason = clean_text(change.reason, "reason", max_len=2000, multiline=True)
    before = _snapshot(allocation)
    _apply(allocation, change, now)
    if change.action in ("extend", "top_up"):
        alerts.rearm(session, allocation)
    audit.record(
        session,
        actor=actor,
        entity="allocation",
        entity_id=allocation.id,
        action=change.action,
        now=now,
        reason=reason,
        before=before,
        after=_snapshot(allocation),
    )
    return allocation


def _apply(allocation: Allocation, change: AllocationChange, now: dt.datetime) -> None:
    state = AllocationState(allocation.state)
    terminal = state in (AllocationState.TERMINATED, AllocationState.EXPIRED)
    if change.action == "extend":
        if state is AllocationState.TERMINATED:
            raise Conflict("a terminated allocation cannot be extended", field="state")
        if change.until is not None and change.until.tzinfo is None:
            raise InvalidInput("give `until` with a time zone (for example ...Z)", "until")
        until = change.until or (
            add_months(allocation.valid_until, change.months) if change.months else None
        )
        if until is None or until <= max(allocation.valid_until, now):
            raise InvalidInput("extend to a date after the current end (and after now)", "until")
        if until > now + MAX_EXTENSION:
            raise InvalidInput(
                f"extend by at most {MAX_EXTENSION.days // 365} years from now", "until"
            )
        allocation.valid_until = until
        allocation.final_report_due = add_months(until, REPORT_DUE_MONTHS)
        if state is AllocationState.EXPIRED:
            allocation.state = AllocationState.ACTIVE.value
    elif change.action == "top_up":
        if terminal:
            raise Conflict(f"a {state} allocation cannot be topped up", field="state")
        hours = change.gpu_hours
        if hours is None:
            raise InvalidInput("top up by a positive number of GPU-hours", field="gpu_hours")
        problem = gpu_hours_problem(hours, maximum=MAX_GPU_HOURS)
        if problem is not None:
            raise InvalidInput(f"top up: {problem}", field="gpu_hours")
        allocation.granted_gpu_hours += hours
    elif change.action == "suspend":
        if state is not AllocationState.ACTIVE:
            raise Conflict(f"only an active allocation can be suspended (it is {state})", "state")
        allocation.state = AllocationState.SUSPENDED.value
    elif change.action == "resume":
        if state is not AllocationState.SUSPENDED:
            raise Conflict(f"only a suspended allocation can resume (it is {state})", "state")
        allocation.state = AllocationState.ACTIVE.value
    elif change.action == "terminate":
        if terminal:
            raise Conflict(f"the allocation is already {state}", field="state")
        allocation.state = AllocationState.TERMINATED.value
        allocation.valid_until = min(allocation.valid_until, now)
        allocation.final_report_due = add_months(allocation.valid_until, REPORT_DUE_MONTHS)
    else:
        raise InvalidInput(f"unknown action {change.action!r}", field="action")


def _snapshot(allocation: Allocation) -> dict[str, object]:
    return {
        "state": allocation.state,
        "granted_gpu_hours": allocation.granted_gpu_hours,
        "valid_until": allocation.valid_until.isoformat(),
    }


def submit_final_report(
    session: Session, actor: User, allocation_id: int, *, text: str, now: dt.datetime
) -> Allocation:
    allocation = get_allocation(session, actor, allocation_id)
    if is_staff(actor) and allocation.project.pi_user_id != actor.id:
        raise Forbidden("the project's PI submits the final report")
    require_pi(session, actor, allocation.project)
    allocation.final_report = clean_text(
        text, "text", max_len=MAX_REPORT_CHARS, min_len=20, multiline=True
    )
    allocation.final_report_at = now
    audit.record(
        session,
        actor=actor,
        entity="allocation",
        entity_id=allocation.id,
        action="final_report",
        now=now,
    )
    return allocation


def overdue_reports(session: Session, pi: User, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(project id, due date) of every project led by `pi` whose final report is overdue."""
    rows = session.execute(
        select(Project.id, Allocation.final_report_due)
        .join(Allocation, Allocation.project_pk == Project.pk)
        .where(
            Project.pi_user_id == pi.id,
            Allocation.final_report.is_(None),
            Allocation.final_report_due < now,
        )
        .order_by(Allocation.final_report_due)
    ).all()
    return [(pid or "", due) for pid, due in rows]


class ExpiryStep:
    """Control-loop step: expire allocations past their end, and tell their PIs."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime]) -> None:
        self.db = db
        self.clock = clock

    def __call__(self) -> int:
        with self.db.session() as session:
            return expire(session, self.clock())


def expire(session: Session, now: dt.datetime) -> int:
    changed = 0
    live = select(Allocation).where(Allocation.state.in_(LIVE), Allocation.valid_until <= now)
    for allocation in session.scalars(live.with_for_update()):
        allocation.state = AllocationState.EXPIRED.value
        audit.record(
            session,
            actor=None,
            entity="allocation",
            entity_id=allocation.id,
            action="expire",
            now=now,
        )
        _tell_pi(session, allocation, "has expired", now)
        changed += 1
    return changed


def _tell_pi(session: Session, allocation: Allocation, what: str, now: dt.datetime) -> None:
    project = allocation.project
    notify.enqueue(
        session,
        to=project.pi.email,
        subject=f"[Fabbrica] Allocation {allocation.id} of {project.id} {what}",
        body=(
            f"The allocation {allocation.id} of project {project.id} on "
            f"{allocation.factory_id} ({allocation.granted_gpu_hours:,.0f} GPU-hours, "
            f"{allocation.used_gpu_hours:,.1f} used) {what} (end: "
            f"{allocation.valid_until:%Y-%m-%d}). The final report is due by "
            f"{allocation.final_report_due:%Y-%m-%d}."
        ),
        kind="expiry",
        now=now,
    )


def for_proposal(session: Session, proposal_id: int) -> Allocation | None:
    return session.scalar(select(Allocation).where(Allocation.proposal_id == proposal_id))
