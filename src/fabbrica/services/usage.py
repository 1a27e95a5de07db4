"""Usage reports: charged GPU-hours grouped by project, factory, organisation, country,
sector or access mode."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.core.errors import InvalidInput
from fabbrica.services.access.visibility import allocation_filter, visible_project
from fabbrica.store.models import (
    Allocation,
    Call,
    Job,
    Organisation,
    Project,
    UsageRecord,
    User,
)

GROUPS = {
    "project": Project.id,
    "factory": Allocation.factory_id,
    "org": Organisation.name,
    "country": Organisation.country,
    "sector": Organisation.sector,
    "mode": Call.mode,
}


def usage(
    session: Session, actor: User, *, by: str = "project", project_id: str | None = None
) -> list[dict[str, Any]]:
    column = GROUPS.get(by)
    if column is None:
        raise InvalidInput(f"group by one of: {', '.join(GROUPS)}", field="by")
    query = (
        select(
            column,
            func.count(UsageRecord.job_id.distinct()),
            func.coalesce(func.sum(UsageRecord.gpu_hours), 0),
        )
        .join(Job, Job.id == UsageRecord.job_id)
        .join(Project, Project.pk == Job.project_pk)
        .join(Organisation, Organisation.id == Project.organisation_id)
        .join(Allocation, Allocation.id == UsageRecord.allocation_id)
        .outerjoin(Call, Call.id == Allocation.call_id)
        .group_by(column)
        .order_by(column)
    )
    if project_id is not None:
        query = query.where(Project.pk == visible_project(session, actor, project_id).pk)
    # an operator's view: the usage charged to allocations at the factories they operate
    query = query.where(allocation_filter(actor))
    return [
        {"key": key if key is not None else "none", "jobs": jobs, "gpu_hours": float(hours or 0)}
        for key, jobs, hours in session.execute(query)
    ]
