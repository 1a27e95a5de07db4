from __future__ import annotations

from fastapi import APIRouter, Query

from fabbrica.api.deps import ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import AllocationIdPath
from fabbrica.api.present import allocation_public
from fabbrica.api.schemas_access import AllocationChange, AllocationPublic, AuditPublic, FinalReport
from fabbrica.services.access import allocations, audit

router = APIRouter(tags=["allocations"])


@router.get("/allocations", response_model=list[AllocationPublic])
def list_allocations(
    session: SessionDep,
    actor: CurrentUser,
    project_id: str | None = Query(default=None, max_length=40),
) -> list[AllocationPublic]:
    """Allocations of your projects (staff: all)."""
    found = allocations.list_allocations(session, actor, project_id=project_id)
    return [allocation_public(a) for a in found]


@router.get("/allocations/{allocation_id}", response_model=AllocationPublic)
def get_allocation(
    allocation_id: AllocationIdPath, session: SessionDep, actor: CurrentUser
) -> AllocationPublic:
    """One allocation."""
    return allocation_public(allocations.get_allocation(session, actor, allocation_id))


@router.post("/allocations/{allocation_id}/changes", response_model=AllocationPublic)
def change_allocation(
    body: AllocationChange,
    allocation_id: AllocationIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> AllocationPublic:
    """Operators extend, top up, suspend, resume or terminate, with a reason (audited)."""
    change = allocations.AllocationChange(**body.model_dump())
    return allocation_public(
        allocations.change(session, actor, allocation_id, change, now=ctx.clock())
    )


@router.post("/allocations/{allocation_id}/final-report", response_model=AllocationPublic)
def final_report(
    body: FinalReport,
    allocation_id: AllocationIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> AllocationPublic:
    """The PI submits the final report (text), due within 3 months of the end."""
    return allocation_public(
        allocations.submit_final_report(
            session, actor, allocation_id, text=body.text, now=ctx.clock()
        )
    )


@router.get("/allocations/{allocation_id}/audit", response_model=list[AuditPublic])
def allocation_audit(
    allocation_id: AllocationIdPath, session: SessionDep, actor: CurrentUser
) -> list[AuditPublic]:
    """Every change of an allocation: who, when, what, why."""
    allocation = allocations.get_allocation(session, actor, allocation_id)
    return [
        AuditPublic.model_validate(e) for e in audit.history(session, "allocation", allocation.id)
    ]
