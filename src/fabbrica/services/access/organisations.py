"""Organisations: legal country, type and sector; the creator is the first admin."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import InvalidInput
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import is_staff, visible_org
from fabbrica.store.models import Organisation, OrganisationMember, User


def create_organisation(
    session: Session,
    actor: User,
    catalog: Catalog,
    *,
    name: str,
    country: str,
    type: str,
    sector: str | None,
    now: dt.datetime,
) -> Organisation:
    name = name.strip()
    if not name:
        raise InvalidInput("a name is required", field="name")
    country = country.strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise InvalidInput(f"{country!r} is not a two-letter country code", field="country")
    if type not in catalog.organisation_types:
        allowed = ", ".join(catalog.organisation_types)
        raise InvalidInput(f"unknown organisation type {type!r} (one of: {allowed})", "type")
    sectors = {s.id for s in catalog.sectors}
    if sector is not None and sector not in sectors:
        raise InvalidInput(
            f"unknown sector {sector!r} (one of: {', '.join(sorted(sectors))})", "sector"
        )
    org = Organisation(
        name=name, country=country, type=type, sector=sector, created_by=actor.id, created_at=now
    )
    session.add(org)
    session.flush()
    session.add(OrganisationMember(organisation_id=org.id, user_id=actor.id, role="admin"))
    audit.record(
        session, actor=actor, entity="organisation", entity_id=org.id, action="create", now=now
    )
    return org


def list_organisations(session: Session, actor: User) -> list[Organisation]:
    query = select(Organisation).order_by(Organisation.id)
    if not is_staff(actor):
        mine = select(OrganisationMember.organisation_id).where(
            OrganisationMember.user_id == actor.id
        )
        query = query.where(Organisation.id.in_(mine))
    return list(session.scalars(query))


def get_organisation(session: Session, actor: User, org_id: int) -> Organisation:
    return visible_org(session, actor, org_id)
