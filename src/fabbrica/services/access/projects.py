"""Projects: a PI, members, invitations by email, PI transfer. Ids in EuroHPC's style."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.access import intake_period, project_id
from fabbrica.core.errors import Conflict, InvalidInput, NotFound
from fabbrica.core.identity import hash_token
from fabbrica.core.text import clean_text
from fabbrica.services import notify
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import (
    org_role,
    require_pi,
    sees_all,
    visible_org,
    visible_project,
    visible_project_pks,
)
from fabbrica.services.identity import normalise_email
from fabbrica.store.models import Invitation, Project, ProjectMember, User

INVITATION_DAYS = 14
DEFAULT_MODE = "playground"


def create_project(
    session: Session,
    actor: User,
    catalog: Catalog,
    *,
    title: str,
    org_id: int,
    mode: str | None,
    now: dt.datetime,
) -> Project:
    """A project in `org_id`, with the actor as PI. `mode` is the access mode the project
    is opened for; it and the intake period go into the id, which never changes."""
    title = clean_text(title, "title", max_len=300)
    org = visible_org(session, actor, org_id)
    if org_role(session, actor, org.id) is None:
        raise NotFound(f"no organisation {org_id}", field="org_id")
    access_mode = catalog.access_mode(mode or DEFAULT_MODE)
    if access_mode is None:
        known = ", ".join(m.id for m in catalog.access_modes)
        raise InvalidInput(f"unknown access mode {mode!r} (one of: {known})", field="mode")
    project = Project(
        title=title,
        organisation_id=org.id,
        pi_user_id=actor.id,
        mode=access_mode.id,
        created_at=now,
    )
    session.add(project)
    session.flush()  # the pk is the sequence part of the id
    project.id = project_id(
        now.year, access_mode.code, intake_period(access_mode, now.date()), project.pk
    )
    session.add(ProjectMember(project_pk=project.pk, user_id=actor.id, role="pi", added_at=now))
    audit.record(
        session, actor=actor, entity="project", entity_id=project.id, action="create", now=now
    )
    return project


def list_projects(session: Session, actor: User, org_id: int | None = None) -> list[Project]:
    query = select(Project).order_by(Project.pk)
    if not sees_all(actor):
        query = query.where(Project.pk.in_(visible_project_pks(actor)))
    if org_id is not None:
        query = query.where(Project.organisation_id == org_id)
    return list(session.scalars(query))


def members(session: Session, project: Project) -> list[ProjectMember]:
    query = select(ProjectMember).where(ProjectMember.project_pk == project.pk)
    return list(session.scalars(query.order_by(ProjectMember.added_at, ProjectMember.user_id)))


def invite(
    session: Session, actor: User, *, project_id: str, email: str, now: dt.datetime
) -> tuple[Invitation, str]:
    """Invite someone by email; returns the invitation and its one-time token."""
    project = visible_project(session, actor, project_id)
    require_pi(session, actor, project)
    email = normalise_email(email)
    existing = session.scalar(select(User).where(User.email == email))
    if existing is not None and _member(session, project, existing.id) is not None:
        raise Conflict(f"{email} is already a member of {project.id}", field="email")
    secret = secrets.token_urlsafe(24)
    invitation = Invitation(
        project_pk=project.pk,
        email=email,
        token_hash=hash_token(secret),
        invited_by=actor.id,
        created_at=now,
        expires_at=now + dt.timedelta(days=INVITATION_DAYS),
    )
    session.add(invitation)
    session.flush()
    notify.enqueue(
        session,
        to=email,
        subject=f"[Fabbrica] Invitation to project {project.id}",
        body=(
            f"{actor.name} invites you to the project {project.id}: {project.title}.\n\n"
            f"To accept, run:\n\n    fabbrica project accept {secret}\n\n"
            f"The invitation expires on {invitation.expires_at:%Y-%m-%d}."
        ),
        kind="invitation",
        now=now,
    )
    audit.record(
        session,
        actor=actor,
        entity="project",
        entity_id=project.id,
        action="invite",
        now=now,
        email=email,
    )
    return invitation, secret


def accept(session: Session, actor: User, *, token: str, now: dt.datetime) -> Project:
    invitation = session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(token.strip()))
    )
    if invitation is None or invitation.email != actor.email:
        raise NotFound("no invitation with this token for your email", field="token")
    if invitation.accepted_at is not None:
        raise Conflict("this invitation was already accepted", field="token")
    if invitation.expires_at <= now:
        raise Conflict("this invitation has expired; ask the PI for a new one", field="token")
    project = session.get(Project, invitation.project_pk)
    assert project is not None
    invitation.accepted_at = now
    invitation.accepted_by = actor.id
    if _member(session, project, actor.id) is None:
        session.add(
            ProjectMember(project_pk=project.pk, user_id=actor.id, role="member", added_at=now)
        )
    audit.record(
        session, actor=actor, entity="project", entity_id=project.id, action="join", now=now
    )
    return project


def remove_member(
    session: Session, actor: User, *, project_id: str, user_id: int, now: dt.datetime
) -> Project:
    project = visible_project(session, actor, project_id)
    require_pi(session, actor, project)
    member = _member(session, project, user_id)
    if member is None:
        raise NotFound(f"user {user_id} is not a member of {project.id}", field="user_id")
    if member.role == "pi":
        raise Conflict("the PI cannot be removed; transfer the PI role first", field="user_id")
    session.delete(member)
    audit.record(
        session,
        actor=actor,
        entity="project",
        entity_id=project.id,
        action="remove_member",
        now=now,
        user_id=user_id,
    )
    return project


def transfer_pi(
    session: Session, actor: User, *, project_id: str, user_id: int, now: dt.datetime
) -> Project:
    project = visible_project(session, actor, project_id)
    require_pi(session, actor, project)
    new_pi = _member(session, project, user_id)
    if new_pi is None:
        raise InvalidInput(
            f"user {user_id} is not a member of {project.id}; invite them first", "user_id"
        )
    old_pi = _member(session, project, project.pi_user_id)
    if old_pi is not None and old_pi.user_id != user_id:
        old_pi.role = "member"
    new_pi.role = "pi"
    previous = project.pi_user_id
    project.pi_user_id = user_id
    audit.record(
        session,
        actor=actor,
        entity="project",
        entity_id=project.id,
        action="transfer_pi",
        now=now,
        previous=previous,
        new=user_id,
    )
    return project


def _member(session: Session, project: Project, user_id: int) -> ProjectMember | None:
    return session.get(ProjectMember, (project.pk, user_id))
