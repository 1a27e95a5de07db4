"""The federation report (docs/reporting.md): GPU-hours granted and used by member state,
factory, sector, organisation type and access mode; the share of startups and SMEs;
decision times against each mode's target in working days; time from acceptance to the
first job; utilisation per factory; EU calls versus national access per factory.

The period is half-open, [start, end), in UTC. Granted GPU-hours are those of the
allocations created in the period, used GPU-hours those of the usage records created in it
(charged to allocations at the factory, whenever the allocation was made). Sums are taken by
the database (GROUP BY), so the report reads a handful of grouped rows, never the usage
records one by one.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, null, or_, select, true, union_all
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog, Channel
from fabbrica.core.access import Intake, next_cutoff
from fabbrica.core.errors import Forbidden, InvalidInput
from fabbrica.core.workdays import percentile, working_days
from fabbrica.services.access.visibility import (
    factories_of,
    in_operated,
    require_staff,
    sees_all,
)
from fabbrica.store.models import (
    Allocation,
    Call,
    Job,
    Organisation,
    Project,
    Proposal,
    UsageRecord,
    User,
)

DIMENSIONS = ("member_state", "factory", "sector", "organisation_type", "access_mode")
SMALL_FIRMS = ("startup", "sme")  # the organisation types counted as startups and SMEs
NONE = "none"  # the key of rows without a value (an organisation without a sector)


def federation_report(
    session: Session,
    actor: User,
    catalog: Catalog,
    *,
    now: dt.datetime,
    start: dt.date | None = None,
    end: dt.date | None = None,
    factory: str | None = None,
) -> dict[str, Any]:
    """The report for [start, end) (dates, from midnight UTC) over the factories `actor`
    may see: an operator's own, a federation admin's all; `factory` narrows it to one."""
    require_staff(actor, "read federation reports")
    start, end = report_period(start, end, now.astimezone(dt.UTC).date())
    return report_between(
        session, actor, catalog, start=_midnight(start), end=_midnight(end), factory=factory
    )


def day(text: str | None, field: str) -> dt.date | None:
    """A day written YYYY-MM-DD (None stays None); anything else is invalid input."""
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field}: not a day as YYYY-MM-DD: {text!r}", field=field) from None


def report_period(
    start: dt.date | None, end: dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The period's first day and the day after its last: by default the last full
    calendar month; with only a start, up to today included; with only an end, from the
    first day of the month before it."""
    if start is None and end is None:
        end = today.replace(day=1)
    if end is None:
        end = today + dt.timedelta(days=1)
    if start is None:
        if end == dt.date.min:
            raise InvalidInput(f"to ({end}) leaves no day before it", field="to")
        start = (end - dt.timedelta(days=1)).replace(day=1)
    if end <= start:
        raise InvalidInput(f"from ({start}) must be before to ({end})", field="from")
    return start, end


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def report_between(
    session: Session,
    actor: User,
    catalog: Catalog,
    *,
    start: dt.datetime,
    end: dt.datetime,
    factory: str | None = None,
) -> dict[str, Any]:
    """The report for the instants [start, end), both aware."""
    require_staff(actor, "read federation reports")
    if end <= start:
        raise InvalidInput("from must be before to", field="from")
    if factory is not None and catalog.factory(factory) is None:
        raise InvalidInput(f"no factory {factory!r} in the catalog", field="factory")
    scope = _scope(session, actor, catalog, factory)

    def in_scope(column: Any) -> ColumnElement[bool]:
        if factory is not None:
            return column == factory  # type: ignore[no-any-return]
        return in_operated(actor, column) if not sees_all(actor) else true()

    period_hours = (end - start).total_seconds() / 3600
    by, granted_by_mode = _grouped(session, start, end, in_scope)
    totals = _sums(by["factory"])  # every allocation has one factory: the rows sum to all
    small = _sums(r for r in by["organisation_type"] if r["key"] in SMALL_FIRMS)
    used_by_factory = {row["key"]: row["used_gpu_hours"] for row in by["factory"]}
    return {
        "period": {
            "from": start.astimezone(dt.UTC).isoformat(),
            "to": end.astimezone(dt.UTC).isoformat(),
            "hours": period_hours,
        },
        "factories": scope,
        "totals": totals,
        "by": by,
        "startups_and_smes": {
            "granted_gpu_hours": small["granted_gpu_hours"],
            "used_gpu_hours": small["used_gpu_hours"],
            "granted_share": _share(small["granted_gpu_hours"], totals["granted_gpu_hours"]),
            "used_share": _share(small["used_gpu_hours"], totals["used_gpu_hours"]),
        },
        "decisions": _decisions(session, catalog, start, end, in_scope),
        "time_to_first_job": _first_jobs(session, start, end, in_scope),
        "utilisation": [
            _utilisation(catalog, f, period_hours, used_by_factory.get(f, 0.0)) for f in scope
        ],
        "funding": _funding(granted_by_mode, catalog, scope),
    }


def _scope(session: Session, actor: User, catalog: Catalog, factory: str | None) -> list[str]:
    """The catalog's factories the report covers, sorted."""
    if sees_all(actor):
        ids = sorted(f.id for f in catalog.factories)
    else:
        ids = [f for f in factories_of(session, actor) if catalog.factory(f) is not None]
    if factory is None:
        return ids
    if factory not in ids:
        raise Forbidden(f"only an operator of {factory} or a federation admin may report on it")
    return [factory]


Row = dict[str, Any]


def _grouped(
    session: Session, start: dt.datetime, end: dt.datetime, in_scope: Any
) -> tuple[dict[str, list[Row]], dict[tuple[str, str], float]]:
    """Granted and used GPU-hours by each dimension, and granted by factory and mode: one
    statement. Its common table has a row per allocation made in the period or charged in
    it, with its usage in the period summed first; each dimension is a GROUP BY over it,
    so the usage records are read once, by the database."""
    in_period = and_(Allocation.created_at >= start, Allocation.created_at < end)
    usage = (
        select(
            UsageRecord.allocation_id.label("allocation_id"),
            func.sum(UsageRecord.gpu_hours).label("gpu_hours"),
            func.count().label("records"),
        )
        .where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .group_by(UsageRecord.allocation_id)
        .subquery("usage")
    )
    base = (
        select(
            Organisation.country.label("member_state"),
            Allocation.factory_id.label("factory"),
            Organisation.sector.label("sector"),
            Organisation.type.label("organisation_type"),
            Call.mode.label("access_mode"),
            case((in_period, Allocation.granted_gpu_hours), else_=0.0).label("granted"),
            case((in_period, 1), else_=0).label("made"),
            func.coalesce(usage.c.gpu_hours, 0.0).label("used"),
            func.coalesce(usage.c.records, 0).label("records"),
        )
        .join(Project, Project.pk == Allocation.project_pk)
        .join(Organisation, Organisation.id == Project.organisation_id)
        .join(Call, Call.id == Allocation.call_id)
        .outerjoin(usage, usage.c.allocation_id == Allocation.id)
        .where(or_(in_period, usage.c.allocation_id.is_not(None)), in_scope(Allocation.factory_id))
        .cte("base")
    )
    sums = (
        func.sum(base.c.granted),
        func.sum(base.c.made),
        func.sum(base.c.used),
        func.sum(base.c.records),
    )
    parts = [
        select(literal(name), base.c[name], null(), *sums).group_by(base.c[name])
        for name in DIMENSIONS
    ]
    parts.append(
        select(literal("funding"), base.c.factory, base.c.access_mode, *sums).group_by(
            base.c.factory, base.c.access_mode
        )
    )
    by: dict[str, list[Row]] = {name: [] for name in DIMENSIONS}
    funding: dict[tuple[str, str], float] = {}
    for name, key, mode, granted, made, used, records in session.execute(union_all(*parts)):
        if name == "funding":
            funding[(key, mode)] = float(granted or 0)
            continue
        by[name].append(
            {
                "key": NONE if key is None else str(key),
                "granted_gpu_hours": float(granted or 0),
                "allocations": int(made or 0),
                "used_gpu_hours": float(used or 0),
                "usage_records": int(records or 0),
            }
        )
    for rows in by.values():
        rows.sort(key=lambda row: str(row["key"]))
    return by, funding


def _sums(rows: Iterable[Row]) -> Row:
    totals: Row = {
        "granted_gpu_hours": 0.0,
        "allocations": 0,
        "used_gpu_hours": 0.0,
        "usage_records": 0,
    }
    for row in rows:
        for field in totals:
            totals[field] += row[field]
    return totals


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _decisions(
    session: Session, catalog: Catalog, start: dt.datetime, end: dt.datetime, in_scope: Any
) -> list[dict[str, Any]]:
    """Per access mode: the proposals decided in the period, and the working days each
    took (from submission, or from the cut-off after it for cut-off modes) against the
    mode's target."""
    rows = session.execute(
        select(Call.mode, Call.factory_id, Proposal.submitted_at, Proposal.decided_at)
        .join(Call, Call.id == Proposal.call_id)
        .where(
            Proposal.decided_at >= start,
            Proposal.decided_at < end,
            Proposal.submitted_at.is_not(None),
            in_scope(Call.factory_id),
        )
    ).all()
    days: dict[str, list[int]] = {}
    for mode_id, factory_id, submitted, decided in rows:
        if submitted is None or decided is None:  # excluded by the query
            continue
        days.setdefault(mode_id, []).append(
            decision_working_days(catalog, mode_id, factory_id, submitted, decided)
        )
    report = []
    for mode_id, values in sorted(days.items()):
        mode = catalog.access_mode(mode_id)
        target = mode.decision_target_working_days if mode else None
        within = None if target is None else sum(1 for v in values if v <= target)
        report.append(
            {
                "mode": mode_id,
                "target_working_days": target,
                "decisions": len(values),
                "within_target": within,
                "within_target_share": None if within is None else within / len(values),
                "median_working_days": float(statistics.median(values)),
                "p90_working_days": float(percentile(values, 0.9) or 0),
            }
        )
    return report


def decision_working_days(
    catalog: Catalog, mode_id: str, factory_id: str, submitted: dt.datetime, decided: dt.datetime
) -> int:
    """The working days (of the factory's country) a decision took: from the submission's
    UTC date, or for a cut-off mode from the cut-off after it, to the decision's."""
    factory = catalog.factory(factory_id)
    country = factory.country if factory else ""
    begin = submitted.astimezone(dt.UTC).date()
    mode = catalog.access_mode(mode_id)
    if mode is not None and mode.intake is Intake.CUTOFFS:
        cutoff = next_cutoff(mode, begin)
        if cutoff is not None:
            begin = cutoff - dt.timedelta(days=1)  # the cut-off day is the first one counted
    return working_days(begin, decided.astimezone(dt.UTC).date(), country)


def _first_jobs(
    session: Session, start: dt.datetime, end: dt.datetime, in_scope: Any
) -> list[dict[str, Any]]:
    """Per access mode, for the allocations made in the period: how many have run a job,
    and the hours from the allocation (the acceptance) to its first job's start."""
    # each allocation's first start, found by ix_jobs_allocation_id_started_at (one probe
    # per allocation, not a read of the jobs); a job of an allocation made in the period
    # starts after it: at `start` or later
    first = (
        select(func.min(Job.started_at))
        .where(Job.allocation_id == Allocation.id, Job.started_at >= start)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Call.mode, Allocation.created_at, first)
        .join(Call, Call.id == Allocation.call_id)
        .where(
            and_(Allocation.created_at >= start, Allocation.created_at < end),
            in_scope(Allocation.factory_id),
        )
    ).all()
    hours: dict[str, list[float]] = {}
    allocations: dict[str, int] = {}
    for mode, created, started in rows:
        allocations[mode] = allocations.get(mode, 0) + 1
        if started is not None:
            started = _aware(started)
            waited = max(0.0, (started - created).total_seconds() / 3600)
            hours.setdefault(mode, []).append(waited)
    return [
        {
            "mode": mode,
            "allocations": n,
            "started": len(hours.get(mode, [])),
            "median_hours": statistics.median(hours[mode]) if mode in hours else None,
            "p90_hours": percentile(hours.get(mode, []), 0.9),
        }
        for mode, n in sorted(allocations.items())
    ]


def _aware(moment: dt.datetime | str) -> dt.datetime:
    """min() over a UTC column comes back without the column's type on SQLite: a string."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def operated_gpus(catalog: Catalog, factory_id: str) -> int:
    """The GPUs a factory operates: those of its systems in operation."""
    factory = catalog.factory(factory_id)
    return 0 if factory is None else sum(p.gpus for p in factory.operating_partitions())


def _utilisation(
    catalog: Catalog, factory_id: str, period_hours: float, used: float
) -> dict[str, Any]:
    gpus = operated_gpus(catalog, factory_id)
    operated = gpus * period_hours
    return {
        "factory": factory_id,
        "gpus": gpus,
        "operated_gpu_hours": operated,
        "used_gpu_hours": used,
        "utilisation": _share(used, operated),
    }


def _funding(
    granted: dict[tuple[str, str], float], catalog: Catalog, scope: Sequence[str]
) -> list[Row]:
    """Per factory: GPU-hours granted through modes of the EU channel and of the national
    one, against the factory's `eu_share` in the catalog."""
    national = {m.id for m in catalog.access_modes if m.channel is Channel.NATIONAL}
    report = []
    for factory_id in scope:
        eu = sum(g for (f, m), g in granted.items() if f == factory_id and m not in national)
        home = sum(g for (f, m), g in granted.items() if f == factory_id and m in national)
        factory = catalog.factory(factory_id)
        report.append(
            {
                "factory": factory_id,
                "eu_gpu_hours": eu,
                "national_gpu_hours": home,
                "eu_share": _share(eu, eu + home),
                "eu_share_target": factory.eu_share if factory else None,
            }
        )
    return report
