"""Who may see and change what. One tenant never sees another's data: what a user may
not see is reported as not found, so ids of others stay private."""

from __future__ import annotations

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from fabbrica.core.errors import Forbidden, NotFound
from fabbrica.core.identity import Role
from fabbrica.store.models import (
    Organisation,
    OrganisationMember,
    Project,
    ProjectMember,
    User,
)


def is_staff(user: User) -> bool:
    """Federation admins and factory operators run calls and see every proposal."""
    return Role(user.role) in {Role.ADMIN, Role.OPERATOR}


def require_staff(user: User, what: str = "do this") -> None:
    if not is_staff(user):
        raise Forbidden(f"only an operator or a federation admin may {what}")


INVITED_ROLES = ("invited_member", "invited_admin")  # added, not yet joined


def org_role(session: Session, user: User, org_id: int) -> str | None:
    """`admin` or `member` of the organisation; None for others and pending invitees."""
    role = session.scalar(
        select(OrganisationMember.role).where(
            OrganisationMember.organisation_id == org_id, OrganisationMember.user_id == user.id
        )
    )
    return None if role in INVITED_ROLES else role


def joined_org_ids(user: User) -> Select[int]:
    return select(OrganisationMember.organisation_id).where(
        OrganisationMember.user_id == user.id, OrganisationMember.role.not_in(INVITED_ROLES)
    )


def project_role(session: Session, user: User, project: Project) -> str | None:
    return session.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_pk == project.pk, ProjectMember.user_id == user.id
        )
    )


def visible_org(session: Session, user: User, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or not (is_staff(user) or org_role(session, user, org_id)):
        raise NotFound(f"no organisation {org_id}", field="org_id")
    return org


def visible_project_pks(user: User) -> Select[int]:
    """The pks of the projects `user` belongs to, directly or through its organisation."""
    org_ids = joined_org_ids(user)
    member_of = select(ProjectMember.project_pk).where(ProjectMember.user_id == user.id)
    return select(Project.pk).where(
        or_(Project.pk.in_(member_of), Project.organisation_id.in_(org_ids))
    )


def find_project(session: Session, project_id: str) -> Project | None:
    return session.scalar(select(Project).where(Project.id == project_id))


def visible_project(
    session: Session, user: User, project_id: str, field: str = "project_id"
) -> Project:
    project = find_project(session, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}", field=field)
    if is_staff(user):
        return project
    if project_role(session, user, project) or org_role(session, user, project.organisation_id):
        return project
    raise NotFound(f"no project {project_id}", field=field)


def require_pi(session: Session, user: User, project: Project) -> None:
    """The PI (or an admin of the project's organisation) manages a project."""
    if project.pi_user_id == user.id or org_role(session, user, project.organisation_id) == (
        "admin"
    ):
        return
    raise Forbidden("only the project's principal investigator may do this")
