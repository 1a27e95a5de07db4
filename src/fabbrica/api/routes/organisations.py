from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import OrgIdPath
from fabbrica.api.schemas_access import (
    OrganisationCreate,
    OrganisationDetail,
    OrganisationMemberAdd,
    OrganisationMemberPublic,
    OrganisationPublic,
)
from fabbrica.services.access import organisations
from fabbrica.store.models import Organisation

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


def _detail(session: Session, org: Organisation) -> OrganisationDetail:
    people = [
        OrganisationMemberPublic(user_id=u.id, name=u.name, email=u.email, role=m.role)
        for m, u in organisations.members(session, org)
    ]
    return OrganisationDetail.model_validate(
        {**OrganisationPublic.model_validate(org).model_dump(), "members": people}
    )


@router.get("/organisations/{org_id}", response_model=OrganisationDetail)
def get_organisation(
    org_id: OrgIdPath, session: SessionDep, actor: CurrentUser
) -> OrganisationDetail:
    """One organisation you belong to, with its members."""
    return _detail(session, organisations.get_organisation(session, actor, org_id))


@router.post("/organisations/{org_id}/members", response_model=OrganisationDetail)
def add_member(
    body: OrganisationMemberAdd,
    org_id: OrgIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> OrganisationDetail:
    """An organisation admin adds a registered user (by email) as member or admin."""
    org = organisations.add_member(
        session, actor, org_id, email=body.email, admin=body.admin, now=ctx.clock()
    )
    return _detail(session, org)


@router.post("/organisations/{org_id}/join", response_model=OrganisationDetail)
def join(
    org_id: OrgIdPath, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> OrganisationDetail:
    """Join an organisation whose admin added you."""
    return _detail(session, organisations.join(session, actor, org_id, now=ctx.clock()))
