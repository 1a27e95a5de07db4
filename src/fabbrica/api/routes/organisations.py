from __future__ import annotations

from fastapi import APIRouter, status

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import OrgIdPath
from fabbrica.api.schemas_access import OrganisationCreate, OrganisationPublic
from fabbrica.services.access import organisations

router = APIRouter(tags=["organisations"])


@router.post(
    "/organisations", response_model=OrganisationPublic, status_code=status.HTTP_201_CREATED
)
def create_organisation(
    body: OrganisationCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> OrganisationPublic:
    """Create an organisation; you become its first admin."""
    org = organisations.create_organisation(
        session,
        actor,
        catalog,
        name=body.name,
        country=body.country,
        type=body.type,
        sector=body.sector,
        now=ctx.clock(),
    )
    return OrganisationPublic.model_validate(org)


@router.get("/organisations", response_model=list[OrganisationPublic])
def list_organisations(session: SessionDep, actor: CurrentUser) -> list[OrganisationPublic]:
    """Your organisations (staff: all)."""
    return [
        OrganisationPublic.model_validate(o)
        for o in organisations.list_organisations(session, actor)
    ]


@router.get("/organisations/{org_id}", response_model=OrganisationPublic)
def get_organisation(
    org_id: OrgIdPath, session: SessionDep, actor: CurrentUser
) -> OrganisationPublic:
    """One organisation you belong to."""
    return OrganisationPublic.model_validate(organisations.get_organisation(session, actor, org_id))
