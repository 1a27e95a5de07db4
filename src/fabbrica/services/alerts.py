"""Budget alerts: an allocation's project members hear, once, when it passes 75, 90 and
100 % of its granted GPU-hours and when it has 14 and 3 days left; operators get a daily
digest of their factories' allocations at 90 % or more.

Each alert is a `budget_alerts` row, unique on (allocation, threshold) and written in the
transaction of its outbox emails: a crash before the commit loses neither (both are rolled
back, and the next round writes them again), a restart or a second controller never sends
one twice (the row is there, or the unique key refuses the second). The row is also the
notice members see (`GET /api/v1/notices`). A top-up re-arms the usage thresholds the
allocation is no longer past, an extension the days-left ones (`rearm`).

Who is told: the project's members (`project_members`: the PI and the members who joined),
active accounts only. Where it runs: the control loop's `alerts` step. One SQL query finds
the live allocations with a threshold due and not yet told; in the steady state it returns
nothing, and nothing else is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from fabbrica.core.access import LIVE
from fabbrica.core.identity import Role
from fabbrica.services import notify
from fabbrica.store.db import Database
from fabbrica.store.models import (
    Allocation,
    BudgetAlert,
    OperatorDigest,
    OperatorFactory,
    Project,
    ProjectMember,
    User,
)

USED_PERCENTS = (75, 90, 100)
DAYS_LEFT = (14, 3)
DIGEST_PERCENT = 90
EPSILON = 1e-6  # GPU-hours: the tolerance of the grant's CHECK constraint
KIND = "budget_alert"
DIGEST_KIND = "budget_digest"


def used_threshold(percent: int) -> str:
    return f"used_{percent}"


def days_threshold(days: int) -> str:
    return f"days_{days}"


def hours(value: float) -> str:
    """GPU-hours for people: 1,000.0 or 750.0; three digits for small ones (0.0178)."""
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _past(percent: float) -> ColumnElement[bool]:
    return Allocation.used_gpu_hours >= Allocation.granted_gpu_hours * (percent / 100) - EPSILON


def _told(threshold: str) -> ColumnElement[bool]:
    return exists().where(
        BudgetAlert.allocation_id == Allocation.id, BudgetAlert.threshold == threshold
    )


def _due(now: dt.datetime) -> ColumnElement[bool]:
    """Some threshold is passed and its alert not yet written."""
    used = [and_(_past(p), ~_told(used_threshold(p))) for p in USED_PERCENTS]
    days = [
        and_(Allocation.valid_until <= now + dt.timedelta(days=d), ~_told(days_threshold(d)))
        for d in DAYS_LEFT
    ]
    return or_(*used, *days)


def check_budgets(session: Session, now: dt.datetime) -> int:
    """Write the alerts that are due, with their emails; returns how many were written."""
    query = (
        select(Allocation)
        .where(Allocation.state.in_(LIVE), Allocation.valid_until > now, _due(now))
        .order_by(Allocation.id)
    )
    written = 0
    for allocation in session.scalars(query):
        written += _alert(session, allocation, now)
    return written


@dataclass(frozen=True)
class _Alert:
    threshold: str
    message: str
    advice: str


def _alert(session: Session, allocation: Allocation, now: dt.datetime) -> int:
    told = set(
        session.scalars(
            select(BudgetAlert.threshold).where(BudgetAlert.allocation_id == allocation.id)
        )
    )
    project = allocation.project
    where = f"Allocation {allocation.id} of {project.id} at {allocation.factory_id}"
    used, granted = allocation.used_gpu_hours, allocation.granted_gpu_hours
    days_left = (allocation.valid_until - now).total_seconds() / 86400
    end = f"{allocation.valid_until:%Y-%m-%d}"
    emailed: list[_Alert] = []
    silent: list[str] = []
    for percent in USED_PERCENTS:
        threshold = used_threshold(percent)
        if threshold in told or used < granted * percent / 100 - EPSILON:
            continue
        emailed.append(
            _Alert(
                threshold,
                f"{where}: {hours(used)} of {hours(granted)} GPU-hours used ({percent}%)",
                _USED_ADVICE if percent < 100 else _SPENT_ADVICE,
            )
        )
    due_days = [
        d for d in DAYS_LEFT if days_threshold(d) not in told and days_left <= d
    ]  # 14 before 3
    if due_days:
        # a late first round (or a short allocation): the most urgent one is said, the
        # others are recorded as told, so that nobody hears "14 days left" with 2 left
        *skipped, urgent = due_days
        silent = [days_threshold(d) for d in skipped]
        emailed.append(
            _Alert(
                days_threshold(urgent),
                f"{where}: {days_left:.0f} days left (ends {end})",
                _DAYS_ADVICE.format(report_due=f"{allocation.final_report_due:%Y-%m-%d}"),
            )
        )
    for threshold in silent:
        session.add(_row(allocation, threshold, f"{where}: {days_left:.0f} days left", now))
    recipients = members_to_tell(session, project)
    for alert in emailed:
        session.add(_row(allocation, alert.threshold, alert.message, now))
        body = (
            f"{alert.message}.\n\n"
            f"Project: {project.id} ({project.title})\n"
            f"Factory: {allocation.factory_id} (call {allocation.call_id})\n"
            f"GPU-hours: {hours(used)} used, {hours(allocation.reserved_gpu_hours)} reserved "
            f"by running jobs, {hours(granted)} granted\n"
            f"Valid until: {end} ({max(days_left, 0):.0f} days left)\n\n"
            f"What to do: {alert.advice}\n"
        )
        for email in recipients:
            notify.enqueue(
                session, to=email, subject=f"[Fabbrica] {alert.message}", body=body,
                kind=KIND, now=now,
            )  # fmt: skip
    session.flush()  # the unique key speaks now, before anything else is written
    return len(emailed) + len(silent)


_USED_ADVICE = (
    "if the project needs more, its PI asks the operator of the factory for a top-up "
    "(more GPU-hours) with the reason, or applies for a new allocation (`fabbrica apply`). "
    "Jobs that need more GPU-hours than are left are refused."
)
_SPENT_ADVICE = (
    "the allocation is spent: no new job can run on it. Its PI asks the operator of the "
    "factory for a top-up (more GPU-hours) with the reason, or applies for a new allocation "
    "(`fabbrica apply`)."
)
_DAYS_ADVICE = (
    "if the project needs more time, its PI asks the operator of the factory for an "
    "extension before the end; after it, jobs no longer run on this allocation. The final "
    "report is due by {report_due}."
)


def _row(allocation: Allocation, threshold: str, message: str, now: dt.datetime) -> BudgetAlert:
    return BudgetAlert(
        allocation_id=allocation.id,
        threshold=threshold,
        message=message[:300],
        used_gpu_hours=allocation.used_gpu_hours,
        granted_gpu_hours=allocation.granted_gpu_hours,
        valid_until=allocation.valid_until,
        created_at=now,
    )


def members_to_tell(session: Session, project: Project) -> list[str]:
    """The emails of the project's PI and members with an active account, PI first."""
    rows = session.execute(
        select(User.email, ProjectMember.role)
        .join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_pk == project.pk, User.active.is_(True))
        .order_by(ProjectMember.added_at, User.id)
    ).all()
    ordered = [email for email, role in rows if role == "pi"]
    ordered += [email for email, role in rows if role != "pi"]
    return list(dict.fromkeys(ordered))


def rearm(session: Session, allocation: Allocation) -> None:
    """After a top-up or an extension: forget the alerts of thresholds the allocation is
    no longer past, so that passing them again is told again."""
    used, granted = allocation.used_gpu_hours, allocation.granted_gpu_hours
    stale = [used_threshold(p) for p in USED_PERCENTS if used < granted * p / 100 - EPSILON]
    rows = session.scalars(select(BudgetAlert).where(BudgetAlert.allocation_id == allocation.id))
    for row in rows:
        if row.threshold in stale or (
            row.threshold.startswith("days_") and row.valid_until < allocation.valid_until
        ):
            session.delete(row)


def notices(session: Session, actor: User, *, limit: int = 50) -> list[BudgetAlert]:
    """The budget alerts of the projects `actor` is a member (or the PI) of, newest first."""
    mine = select(ProjectMember.project_pk).where(ProjectMember.user_id == actor.id)
    query = (
        select(BudgetAlert)
        .join(Allocation, Allocation.id == BudgetAlert.allocation_id)
        .where(Allocation.project_pk.in_(mine))
        .order_by(BudgetAlert.created_at.desc(), BudgetAlert.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def send_digests(session: Session, now: dt.datetime) -> int:
    """Each operator's digest of the day (UTC), once: the live allocations of the factories
    they operate at 90 % or more of their GPU-hours; nothing sent when there are none.
    Returns how many emails were written."""
    day = now.astimezone(dt.UTC).date().isoformat()
    done = exists().where(OperatorDigest.user_id == User.id, OperatorDigest.day == day)
    operators = session.scalars(
        select(User)
        .where(User.role == Role.OPERATOR.value, User.active.is_(True), ~done)
        .order_by(User.id)
    )
    sent = 0
    for operator in operators:
        theirs = select(OperatorFactory.factory_id).where(OperatorFactory.user_id == operator.id)
        high = list(
            session.scalars(
                select(Allocation)
                .where(
                    Allocation.factory_id.in_(theirs),
                    Allocation.state.in_(LIVE),
                    Allocation.valid_until > now,
                    _past(DIGEST_PERCENT),
                )
                .order_by(Allocation.factory_id, Allocation.id)
            )
        )
        session.add(
            OperatorDigest(user_id=operator.id, day=day, allocations=len(high), created_at=now)
        )
        if high:
            notify.enqueue(
                session,
                to=operator.email,
                subject=f"[Fabbrica] {day}: {len(high)} allocations at {DIGEST_PERCENT}% or more",
                body=_digest_body(high, now),
                kind=DIGEST_KIND,
                now=now,
            )
            sent += 1
    return sent


def _digest_body(high: list[Allocation], now: dt.datetime) -> str:
    lines = [
        f"Allocations of your factories at {DIGEST_PERCENT}% or more of their GPU-hours:",
        "",
    ]
    for a in high:
        percent = 100 * a.used_gpu_hours / a.granted_gpu_hours if a.granted_gpu_hours else 100
        days = (a.valid_until - now).total_seconds() / 86400
        lines.append(
            f"- {a.factory_id}: allocation {a.id} of {a.project.id} ({a.state}), "
            f"{hours(a.used_gpu_hours)} of {hours(a.granted_gpu_hours)} GPU-hours used "
            f"({percent:.0f}%), ends {a.valid_until:%Y-%m-%d} ({days:.0f} days left)"
        )
    lines += [
        "",
        "Their members were told. Top up or extend where the project asks: "
        "`fabbrica allocation top-up ID --gpu-hours N --reason TEXT`, "
        "`fabbrica allocation extend ID ...`.",
    ]
    return "\n".join(lines) + "\n"


class AlertStep:
    """Control-loop step: budget alerts, then the operators' digests of the day."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime]) -> None:
        self.db = db
        self.clock = clock

    def __call__(self) -> int:
        now = self.clock()
        with self.db.session() as session:
            return check_budgets(session, now) + send_digests(session, now)
