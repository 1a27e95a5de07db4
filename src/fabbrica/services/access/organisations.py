"""Organisations: legal country, type and sector; the creator is the first admin."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import Forbidden, InvalidInput, NotFound
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import is_staff, org_role, visible_org
from fabbrica.services.identity import normalise_email
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


def add_member(
    session: Session, actor: User, org_id: int, *, email: str, admin: bool, now: dt.datetime
) -> Organisation:
    """An organisation admin adds a registered user as a member (or admin)."""
    org = visible_org(session, actor, org_id)
    if org_role(session, actor, org.id) != "admin":
        raise Forbidden("only an admin of the organisation may add members")
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFound(f"no user with email {email}", field="email")
    role = "admin" if admin else "member"
    member = session.get(OrganisationMember, (org.id, user.id))
    if member is None:
        session.add(OrganisationMember(organisation_id=org.id, user_id=user.id, role=role))
    else:
        member.role = role
    audit.record(
        session,
        actor=actor,
        entity="organisation",
        entity_id=org.id,
        action="add_member",
        now=now,
        user_id=user.id,
        role=role,
    )
    return org


def members(session: Session, org: Organisation) -> list[tuple[OrganisationMember, User]]:
    rows = session.execute(
        select(OrganisationMember, User)
        .join(User, User.id == OrganisationMember.user_id)
        .where(OrganisationMember.organisation_id == org.id)
        .order_by(User.id)
    ).all()
    return [(m, u) for m, u in rows]
