"""The federation admin's dashboard (the federation report as charts: GPU-hours granted and
used by member state, sector, organisation type and access mode; decisions within target
per mode; utilisation per factory) and a member's usage over time. Charts are SVG drawn on
the server (portal/charts.py), each with its figures as a table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from fabbrica.core.errors import NotFound
from fabbrica.portal import charts
from fabbrica.portal.i18n import N_, _, number
from fabbrica.portal.web import DbSession, PortalRoute, UserDep, ViewerDep, context, render
from fabbrica.services import federation_report, usage_series
from fabbrica.services.access.visibility import sees_all

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
DIMENSIONS = {
    "member_state": N_("Member state"),
    "sector": N_("Sector"),
    "organisation_type": N_("Organisation type"),
    "access_mode": N_("Access mode"),
}
DEFAULT_DAYS = 365  # the dashboard's period without from/to: the last year, today included


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    start: str | None = Query(default=None, alias="from", max_length=10),
    end: str | None = Query(default=None, alias="to", max_length=10),
) -> Response:
    if not sees_all(user):
        raise NotFound("no dashboard")  # the federation office's page: 404 for anyone else
    ctx = context(request)
    now = ctx.clock()
    first = federation_report.day(start, "from")
    last = federation_report.day(end, "to")
    if first is None and last is None:
        first = now.astimezone(dt.UTC).date() - dt.timedelta(days=DEFAULT_DAYS - 1)
    report = federation_report.federation_report(
        session, user, ctx.catalog, now=now, start=first, end=last
    )
    return render(
        request,
        who,
        "dashboard.html",
        report=report,
        charts=_charts(request, report),
        start=report["period"]["from"][:10],
        end=(dt.datetime.fromisoformat(report["period"]["to"]) - dt.timedelta(days=1))
        .date()
        .isoformat(),
    )


def _charts(request: Request, report: dict[str, Any]) -> list[charts.Chart]:
    catalog = context(request).catalog
    modes = {m.id: m.name for m in catalog.access_modes}
    factories = {f.id: f.name for f in catalog.factories}
    made = []
    for key, title in DIMENSIONS.items():
        rows = report["by"][key]
        names = [modes.get(r["key"], r["key"]) if key == "access_mode" else r["key"] for r in rows]
        made.append(
            charts.bar_chart(
                f"chart-{key.replace('_', '-')}",
                _("GPU-hours by %(dimension)s") % {"dimension": _(title).lower()},
                names,
                [
                    charts.Series(_("Granted"), tuple(r["granted_gpu_hours"] for r in rows)),
                    charts.Series(_("Used"), tuple(r["used_gpu_hours"] for r in rows)),
                ],
                first_column=_(title),
            )
        )
    decisions = report["decisions"]
    made.append(
        charts.bar_chart(
            "chart-decisions",
            _("Decisions within target, by access mode"),
            [modes.get(d["mode"], d["mode"]) for d in decisions],
            [charts.Series(_("Within target"), tuple(d["within_target_share"] for d in decisions))],
            fmt=charts.percent,
            maximum=1.0,
            first_column=_("Access mode"),
            extra_columns=[
                (_("Decisions"), [str(d["decisions"]) for d in decisions]),
                (
                    _("Target (working days)"),
                    [_or_none(d["target_working_days"]) for d in decisions],
                ),
                (
                    _("Median (working days)"),
                    [number(d["median_working_days"], None) for d in decisions],
                ),
            ],
        )
    )
    used = [u for u in report["utilisation"] if u["gpus"]]
    made.append(
        charts.bar_chart(
            "chart-utilisation",
            _("Utilisation per factory"),
            [factories.get(u["factory"], u["factory"]) for u in used],
            [charts.Series(_("Used of operated"), tuple(u["utilisation"] for u in used))],
            fmt=charts.percent,
            maximum=max([1.0, *(u["utilisation"] or 0.0 for u in used)]),
            first_column=_("Factory"),
            extra_columns=[
                (_("GPUs"), [number(u["gpus"]) for u in used]),
                (_("GPU-hours used"), [charts.gpu_hours(u["used_gpu_hours"]) for u in used]),
            ],
        )
    )
    return made


def _or_none(value: int | None) -> str:
    return _("none") if value is None else str(value)


@router.get("/usage", response_class=HTMLResponse)
def usage_page(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    bucket: str = Query(default="week", max_length=8),
) -> Response:
    count = 12 if bucket == "week" else 30
    points = usage_series.usage_over_time(
        session, user, now=context(request).clock(), bucket=bucket, count=count
    )
    title = (
        _("GPU-hours used per week, last %(count)d weeks")
        if bucket == "week"
        else _("GPU-hours used per day, last %(count)d days")
    )
    chart = charts.column_chart(
        "chart-usage",
        title % {"count": count},
        [p.start for p in points],
        [p.gpu_hours for p in points],
        first_column=_("Week of") if bucket == "week" else _("Day"),
    )
    total = sum(p.gpu_hours for p in points)
    return render(request, who, "usage.html", chart=chart, bucket=bucket, total=total)
