from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import ID_PATTERN
from fabbrica.services import federation_report, reports

router = APIRouter(tags=["reports"])
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # a day, as YYYY-MM-DD only (no timestamps)


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
        str | None,
        Query(
            alias="from",
            pattern=DAY_PATTERN,
            description="first day, YYYY-MM-DD (UTC), included; default: last month's",
            json_schema_extra={"format": "date"},
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            pattern=DAY_PATTERN,
            description="the day after the last, YYYY-MM-DD (UTC), excluded",
            json_schema_extra={"format": "date"},
        ),
    ] = None,
    factory: Annotated[
        str | None, Query(max_length=64, pattern=ID_PATTERN, description="one factory only")
    ] = None,
) -> dict[str, Any]:
    """GPU-hours granted and used, decision times, utilisation and funding channels over
    a period [from, to) (operators: their factories; federation admins: all)."""
    return federation_report.federation_report(
        session,
        actor,
        catalog,
        now=ctx.clock(),
        start=federation_report.day(start, "from"),
        end=federation_report.day(end, "to"),
        factory=factory,
    )
