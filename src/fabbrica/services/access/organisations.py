"""Organisations: legal country, type and sector; the creator is the first admin."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.countries import country_code
from fabbrica.core.errors import Forbidden, InvalidInput, NotFound
from fabbrica.core.lookup import resolve
from fabbrica.core.text import clean_text
from fabbrica.services import notify
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import (
    INVITED_ROLES,
    org_role,
    sees_all,
    visible_org,
    visible_org_ids,
)
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
    name = clean_text(name, "name", max_len=200)
    country = country_code(country)
    type = type.strip().lower().replace("-", "_").replace(" ", "_")
    if type not in catalog.organisation_types:
        allowed = ", ".join(catalog.organisation_types)
        raise InvalidInput(f"unknown organisation type {type!r} (one of: {allowed})", "type")
    if sector is not None:
        found = resolve(sector, ((s.id, s.name) for s in catalog.sectors))
        if found is None:
            known = ", ".join(s.id for s in catalog.sectors)
            raise InvalidInput(f"unknown sector {sector!r} (one of: {known})", "sector")
        sector = found
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
    if not sees_all(actor):
        query = query.where(Organisation.id.in_(visible_org_ids(actor)))
    return list(session.scalars(query))


def get_organisation(session: Session, actor: User, org_id: int) -> Organisation:
    return visible_org(session, actor, org_id)


def add_member(
    session: Session, actor: User, org_id: int, *, email: str, admin: bool, now: dt.datetime
) -> Organisation:
    """An organisation admin adds a registered user. Someone not yet in the organisation
    is invited and becomes a member only when they join (`join`): nobody is enrolled, and
    so made conflicted as a reviewer, without consent. A member's role changes at once."""
    org = visible_org(session, actor, org_id)
    if org_role(session, actor, org.id) != "admin":
        raise Forbidden("only an admin of the organisation may add members")
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFound(f"no user with email {email}", field="email")
    member = session.get(OrganisationMember, (org.id, user.id))
    joined = member is not None and member.role not in INVITED_ROLES
    role = (
        ("admin" if admin else "member")
        if joined
        else ("invited_admin" if admin else "invited_member")
    )
    if member is None:
        session.add(OrganisationMember(organisation_id=org.id, user_id=user.id, role=role))
    else:
        member.role = role
    if not joined:
        notify.enqueue(
            session,
            to=user.email,
            subject=f"[Fabbrica] {actor.name} adds you to {org.name}",
            body=(
                f"{actor.name} adds you to the organisation {org.name} (id {org.id}) on "
                f"Fabbrica. To join, run:\n\n    fabbrica org join {org.id}\n"
            ),
            kind="invitation",
            now=now,
        )
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


def join(session: Session, actor: User, org_id: int, *, now: dt.datetime) -> Organisation:
    """Accept being added to an organisation."""
    member = session.get(OrganisationMember, (org_id, actor.id))
    if member is None or member.role not in INVITED_ROLES:
        raise NotFound(f"no pending invitation to organisation {org_id}", field="org_id")
    member.role = member.role.removeprefix("invited_")
    audit.record(
        session, actor=actor, entity="organisation", entity_id=org_id, action="join", now=now
    )
    org = session.get(Organisation, org_id)
    assert org is not None
    return org


def members(session: Session, org: Organisation) -> list[tuple[OrganisationMember, User]]:
    rows = session.execute(
        select(OrganisationMember, User)
        .join(User, User.id == OrganisationMember.user_id)
        .where(OrganisationMember.organisation_id == org.id)
        .order_by(User.id)
    ).all()
    return [(m, u) for m, u in rows]


def invitations_for(session: Session, actor: User) -> list[tuple[Organisation, str]]:
    """The organisations `actor` was added to and has not joined yet, with the role each
    offers (`admin` or `member`)."""
    rows = session.execute(
        select(Organisation, OrganisationMember.role)
        .join(OrganisationMember, OrganisationMember.organisation_id == Organisation.id)
        .where(OrganisationMember.user_id == actor.id, OrganisationMember.role.in_(INVITED_ROLES))
        .order_by(Organisation.id)
    ).all()
    return [(org, role.removeprefix("invited_")) for org, role in rows]
