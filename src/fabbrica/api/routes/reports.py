from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import ID_PATTERN
from fabbrica.services import federation_report, reports

router = APIRouter(tags=["reports"])


@router.get("/reports/access")
def access_report(session: SessionDep, actor: CurrentUser) -> dict[str, Any]:
    """Proposals by mode, state, country, organisation type and sector; median decision
    time per mode (operators and federation admins)."""
    return reports.access_report(session, actor)


@router.get("/reports/federation")
def report_federation(
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
    ctx: ContextDep,
    start: Annotated[
        dt.date | None,
        Query(alias="from", description="first day (UTC), included; default: last month's"),
    ] = None,
    end: Annotated[
        dt.date | None,
        Query(alias="to", description="day after the last (UTC), excluded"),
    ] = None,
    factory: Annotated[
        str | None, Query(max_length=64, pattern=ID_PATTERN, description="one factory only")
    ] = None,
) -> dict[str, Any]:
    """GPU-hours granted and used, decision times, utilisation and funding channels over
    a period [from, to) (operators: their factories; federation admins: all)."""
    return federation_report.federation_report(
        session, actor, catalog, now=ctx.clock(), start=start, end=end, factory=factory
    )
