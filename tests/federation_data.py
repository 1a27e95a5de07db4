"""A seeded federation for the report tests: several hundred proposals, allocations and
usage records across 10 factories; and the report's figures computed independently, with
SQL written here (not the service's queries) and the working days counted day by day."""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
from pathlib import Path
from typing import Any

import holidays
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from fabbrica.catalog import loader
from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import Catalog
from fabbrica.core.access import Intake, next_cutoff
from fabbrica.services.access.calls import call_id_for
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
from fabbrica.store.types import UTCDateTime

UTC = dt.UTC
FACTORIES = (
    "lumi-aif",
    "bsc-aif",
    "it4lia",
    "meluxina-ai",
    "mimer",
    "hammerhai",
    "pharos",
    "jaif",
    "ai2f",
    "ai-at",
)
MODES = ("playground", "fast_lane", "large_scale", "ai_for_science", "benchmark")
COUNTRIES = ("IT", "FI", "DE", "FR", "ES", "SE", "AT", "GR", "LU", "PL", "NL", "CZ")
TYPES = ("startup", "sme", "large_industry", "academia", "public_sector")
START = dt.datetime(2026, 10, 1, tzinfo=UTC)
END = dt.datetime(2026, 11, 1, tzinfo=UTC)


def report_catalog(tmp_path: Path) -> tuple[Catalog, Path]:
    """The shipped catalog with the benchmark mode on the national channel and it4lia's EU
    share at 0.7, as an operator would write them (the YAML file is returned too)."""
    shipped = Path(loader.__file__).parent / "data" / "eurohpc.yaml"
    yaml = shipped.read_text()
    yaml = yaml.replace("  - id: benchmark\n", "  - id: benchmark\n    channel: national\n", 1)
    yaml = yaml.replace("  - id: it4lia\n", "  - id: it4lia\n    eu_share: 0.7\n", 1)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml)
    return load_catalog(path), path


def _at(rng: random.Random, first: dt.datetime, days: float) -> dt.datetime:
    return first + dt.timedelta(seconds=rng.randrange(int(days * 86400)))


def generate(session: Session, catalog: Catalog, *, seed: int = 16) -> dict[str, int]:
    """Organisations, projects, proposals, allocations, jobs and usage records from
    September to mid-November 2026, with some on the period's bounds."""
    rng = random.Random(seed)
    now = dt.datetime(2026, 9, 1, tzinfo=UTC)
    pi = User(email="pi@example.org", name="PI", role="user", created_at=now)
    session.add(pi)
    session.flush()
    existing = set(session.scalars(select(Call.id)))
    calls: list[Call] = []
    for factory in FACTORIES:
        for mode in MODES:
            call_id = call_id_for(factory, mode)
            call = session.get(Call, call_id) if call_id in existing else None
            if call is None:
                call = Call(
                    id=call_id,
                    mode=mode,
                    factory_id=factory,
                    state="open",
                    decision="manual",
                    min_reviews=0,
                    created_at=now,
                )
                session.add(call)
            calls.append(call)
    sectors = [s.id for s in catalog.sectors[:6]] + [None]
    orgs = [
        Organisation(
            name=f"org {n}",
            country=rng.choice(COUNTRIES),
            type=rng.choice(TYPES),
            sector=rng.choice(sectors),
            created_by=pi.id,
            created_at=now,
        )
        for n in range(40)
    ]
    session.add_all(orgs)
    session.flush()
    projects = [
        Project(
            title=f"project {n}",
            organisation_id=rng.choice(orgs).id,
            pi_user_id=pi.id,
            mode=rng.choice(MODES),
            created_at=now,
        )
        for n in range(150)
    ]
    session.add_all(projects)
    session.flush()
    proposals: list[Proposal] = []
    for n in range(420):
        call = rng.choice(calls)
        submitted = _at(rng, dt.datetime(2026, 9, 1, tzinfo=UTC), 70)
        decided: dt.datetime | None = submitted + dt.timedelta(hours=rng.uniform(0.5, 24 * 25))
        state = rng.choice(("accepted", "accepted", "accepted", "rejected", "submitted"))
        if n == 0:  # exactly on the period's start: counted
            decided, state = START, "accepted"
        if n == 1:  # exactly on its end: not counted
            decided, state = END, "accepted"
        if state == "submitted":
            decided = None
        proposals.append(
            Proposal(
                project_pk=rng.choice(projects).pk,
                call_id=call.id,
                state=state,
                gpu_hours=1000,
                months=3,
                abstract="-",
                created_by=pi.id,
                created_at=submitted,
                submitted_at=submitted,
                decided_at=decided,
            )
        )
    session.add_all(proposals)
    session.flush()
    factory_of = {call.id: call.factory_id for call in calls}
    allocations = [
        Allocation(
            project_pk=p.project_pk,
            proposal_id=p.id,
            call_id=p.call_id,
            factory_id=factory_of[p.call_id],
            granted_gpu_hours=float(rng.choice((50, 500, 2000, 10000))) + rng.random(),
            valid_from=p.decided_at,
            valid_until=p.decided_at + dt.timedelta(days=90),
            state="active",
            final_report_due=p.decided_at + dt.timedelta(days=180),
            created_at=p.decided_at,
        )
        for p in proposals
        if p.state == "accepted" and p.decided_at is not None
    ]
    session.add_all(allocations)
    session.flush()
    runs: list[tuple[Job, float]] = []
    for allocation in allocations:
        for _ in range(rng.randrange(0, 6)):
            started = allocation.created_at + dt.timedelta(hours=rng.uniform(0.1, 24 * 20))
            elapsed = rng.uniform(60, 36 * 3600)
            gpus = rng.choice((1, 2, 4, 8))
            ended = started + dt.timedelta(seconds=elapsed)
            if not runs:
                ended = START  # a usage record on the period's start: counted
            elif len(runs) == 1:
                ended = END  # on its end: not counted
            job = Job(
                project_pk=allocation.project_pk,
                user_id=pi.id,
                name="j",
                spec="{}",
                state="completed",
                gpus=gpus,
                nodes=1,
                time_limit_s=3600,
                factory_id=allocation.factory_id,
                allocation_id=allocation.id,
                submitted_at=started,
                started_at=started,
                ended_at=ended,
            )
            runs.append((job, elapsed))
    session.add_all(job for job, _ in runs)
    session.flush()
    session.add_all(
        UsageRecord(
            job_id=job.id,
            allocation_id=job.allocation_id,
            gpus=job.gpus,
            elapsed_s=elapsed,
            gpu_hours=job.gpus * elapsed / 3600,
            created_at=job.ended_at,
            factory_id=job.factory_id,
        )
        for job, elapsed in runs
    )
    session.commit()
    return {
        "proposals": len(proposals),
        "allocations": len(allocations),
        "usage_records": len(runs),
    }


# --- the figures, independently -------------------------------------------------------

DIMENSION_SQL = {
    "member_state": "o.country",
    "factory": "a.factory_id",
    "sector": "o.sector",
    "organisation_type": "o.type",
    "access_mode": "c.mode",
}


def _rows(session: Session, sql: str, start: dt.datetime, end: dt.datetime) -> list[Any]:
    query = text(sql).bindparams(
        bindparam("start", start, type_=UTCDateTime()), bindparam("end", end, type_=UTCDateTime())
    )
    return list(session.execute(query))


def expected(
    session: Session, catalog: Catalog, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """The report's figures for a federation admin, from SQL written here."""
    hours = (end - start).total_seconds() / 3600
    joins = (
        "JOIN projects p ON p.pk = a.project_pk "
        "JOIN organisations o ON o.id = p.organisation_id JOIN calls c ON c.id = a.call_id"
    )
    by: dict[str, list[dict[str, Any]]] = {}
    for name, column in DIMENSION_SQL.items():
        granted = {
            k or "none": (g, n)
            for k, g, n in _rows(
                session,
                f"SELECT {column}, SUM(a.granted_gpu_hours), COUNT(*) FROM allocations a {joins} "
                f"WHERE a.created_at >= :start AND a.created_at < :end GROUP BY {column}",
                start,
                end,
            )
        }
        used = {
            k or "none": (u, n)
            for k, u, n in _rows(
                session,
                f"SELECT {column}, SUM(r.gpu_hours), COUNT(*) FROM usage_records r "
                f"JOIN allocations a ON a.id = r.allocation_id {joins} "
                f"WHERE r.created_at >= :start AND r.created_at < :end GROUP BY {column}",
                start,
                end,
            )
        }
        by[name] = [
            {
                "key": key,
                "granted_gpu_hours": granted.get(key, (0.0, 0))[0],
                "allocations": granted.get(key, (0.0, 0))[1],
                "used_gpu_hours": used.get(key, (0.0, 0))[0],
                "usage_records": used.get(key, (0.0, 0))[1],
            }
            for key in sorted(granted.keys() | used.keys())
        ]
    [(granted_all, allocations_all)] = _rows(
        session,
        "SELECT COALESCE(SUM(granted_gpu_hours), 0), COUNT(*) FROM allocations a "
        "WHERE a.created_at >= :start AND a.created_at < :end",
        start,
        end,
    )
    [(used_all, records_all)] = _rows(
        session,
        "SELECT COALESCE(SUM(gpu_hours), 0), COUNT(*) FROM usage_records r "
        "WHERE r.created_at >= :start AND r.created_at < :end",
        start,
        end,
    )
    [(granted_small,)] = _rows(
        session,
        f"SELECT COALESCE(SUM(a.granted_gpu_hours), 0) FROM allocations a {joins} "
        "WHERE a.created_at >= :start AND a.created_at < :end AND o.type IN ('startup', 'sme')",
        start,
        end,
    )
    [(used_small,)] = _rows(
        session,
        f"SELECT COALESCE(SUM(r.gpu_hours), 0) FROM usage_records r "
        f"JOIN allocations a ON a.id = r.allocation_id {joins} "
        "WHERE r.created_at >= :start AND r.created_at < :end AND o.type IN ('startup', 'sme')",
        start,
        end,
    )
    factories = sorted(f.id for f in catalog.factories)
    used_by_factory = {r["key"]: r["used_gpu_hours"] for r in by["factory"]}
    utilisation = []
    for factory_id in factories:
        factory = catalog.factory(factory_id)
        assert factory is not None
        gpus = sum(p.gpus for p in factory.operating_partitions())
        used = used_by_factory.get(factory_id, 0.0)
        utilisation.append(
            {
                "factory": factory_id,
                "gpus": gpus,
                "operated_gpu_hours": gpus * hours,
                "used_gpu_hours": used,
                "utilisation": used / (gpus * hours) if gpus else None,
            }
        )
    by_channel = _rows(
        session,
        "SELECT a.factory_id, c.mode, SUM(a.granted_gpu_hours) FROM allocations a "
        "JOIN calls c ON c.id = a.call_id "
        "WHERE a.created_at >= :start AND a.created_at < :end GROUP BY a.factory_id, c.mode",
        start,
        end,
    )
    national = {m.id for m in catalog.access_modes if m.channel.value == "national"}
    funding = []
    for factory_id in factories:
        eu = sum(g for f, m, g in by_channel if f == factory_id and m not in national)
        home = sum(g for f, m, g in by_channel if f == factory_id and m in national)
        factory = catalog.factory(factory_id)
        assert factory is not None
        funding.append(
            {
                "factory": factory_id,
                "eu_gpu_hours": eu,
                "national_gpu_hours": home,
                "eu_share": eu / (eu + home) if eu + home else None,
                "eu_share_target": factory.eu_share,
            }
        )
    return {
        "totals": {
            "granted_gpu_hours": granted_all,
            "allocations": allocations_all,
            "used_gpu_hours": used_all,
            "usage_records": records_all,
        },
        "by": by,
        "startups_and_smes": {
            "granted_gpu_hours": granted_small,
            "used_gpu_hours": used_small,
            "granted_share": granted_small / granted_all if granted_all else None,
            "used_share": used_small / used_all if used_all else None,
        },
        "decisions": _decisions(session, catalog, start, end),
        "time_to_first_job": _first_jobs(session, start, end),
        "utilisation": utilisation,
        "funding": funding,
    }


def count_working_days(first: dt.date, last: dt.date, country: str) -> int:
    """Day by day: the weekdays after `first` up to `last` that are not holidays."""
    off = holidays.country_holidays(country, years=range(first.year, last.year + 1))
    days = 0
    day = first + dt.timedelta(days=1)
    while day <= last:
        if day.weekday() < 5 and day not in off:
            days += 1
        day += dt.timedelta(days=1)
    return days


def nearest_rank(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _decisions(
    session: Session, catalog: Catalog, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    rows = _rows(
        session,
        "SELECT c.mode, c.factory_id, pr.submitted_at, pr.decided_at FROM proposals pr "
        "JOIN calls c ON c.id = pr.call_id WHERE pr.decided_at >= :start "
        "AND pr.decided_at < :end AND pr.submitted_at IS NOT NULL",
        start,
        end,
    )
    days: dict[str, list[int]] = {}
    for mode_id, factory_id, submitted, decided in rows:
        factory = catalog.factory(factory_id)
        mode = catalog.access_mode(mode_id)
        assert factory is not None and mode is not None
        first = _aware(submitted).date()
        if mode.intake is Intake.CUTOFFS:
            cutoff = next_cutoff(mode, first)
            assert cutoff is not None
            first = cutoff - dt.timedelta(days=1)
        days.setdefault(mode_id, []).append(
            count_working_days(first, _aware(decided).date(), factory.country)
        )
    out = []
    for mode_id, values in sorted(days.items()):
        mode = catalog.access_mode(mode_id)
        assert mode is not None
        target = mode.decision_target_working_days
        within = None if target is None else sum(v <= target for v in values)
        out.append(
            {
                "mode": mode_id,
                "target_working_days": target,
                "decisions": len(values),
                "within_target": within,
                "within_target_share": None if within is None else within / len(values),
                "median_working_days": float(statistics.median(values)),
                "p90_working_days": float(nearest_rank([float(v) for v in values], 0.9) or 0),
            }
        )
    return out


def _first_jobs(session: Session, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    rows = _rows(
        session,
        "SELECT c.mode, a.created_at, (SELECT MIN(j.started_at) FROM jobs j "
        "WHERE j.allocation_id = a.id) FROM allocations a JOIN calls c ON c.id = a.call_id "
        "WHERE a.created_at >= :start AND a.created_at < :end",
        start,
        end,
    )
    allocations: dict[str, int] = {}
    waits: dict[str, list[float]] = {}
    for mode, created, first in rows:
        allocations[mode] = allocations.get(mode, 0) + 1
        if first is not None:
            hours = (_aware(first) - _aware(created)).total_seconds() / 3600
            waits.setdefault(mode, []).append(max(hours, 0.0))
    return [
        {
            "mode": mode,
            "allocations": n,
            "started": len(waits.get(mode, [])),
            "median_hours": statistics.median(waits[mode]) if mode in waits else None,
            "p90_hours": nearest_rank(waits.get(mode, []), 0.9),
        }
        for mode, n in sorted(allocations.items())
    ]


def assert_same(report: Any, want: Any, path: str = "report") -> None:
    """Every cell equal: numbers to a relative 1e-9 (sums in another order), the rest exactly."""
    if isinstance(want, dict):
        assert isinstance(report, dict), path
        assert set(report) >= set(want), f"{path}: missing {set(want) - set(report)}"
        for key, value in want.items():
            assert_same(report[key], value, f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(report, list) and len(report) == len(want), (
            f"{path}: {len(report)} rows, want {len(want)}"
        )
        for n, (got, value) in enumerate(zip(report, want, strict=True)):
            assert_same(got, value, f"{path}[{n}]")
    elif isinstance(want, float) and not isinstance(report, bool):
        assert isinstance(report, int | float), f"{path}: {report!r}"
        assert math.isclose(report, want, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {report} != {want}"
    else:
        assert report == want, f"{path}: {report!r} != {want!r}"
