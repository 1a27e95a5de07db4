"""Who may see and change what. One tenant never sees another's data: what a user may
not see is reported as not found, so ids of others stay private.

Staff are federation admins, who see everything, and factory operators, who see what
concerns the factories they operate (operator_factories): those factories' proposals,
allocations, jobs and agents, and the projects and organisations that applied there. An
operator's actions on another factory's objects are refused like a tenant's on another
tenant's: not found where the object is not theirs to see, forbidden where it is public
(calls).
"""

from __future__ import annotations

from sqlalchemy import Select, false, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from fabbrica.core.errors import Forbidden, NotFound
from fabbrica.core.identity import Role
from fabbrica.services.identity import mfa_refusal
from fabbrica.store.models import (
    Allocation,
    Call,
    Job,
    OperatorFactory,
    Organisation,
    OrganisationMember,
    Project,
    ProjectMember,
    Proposal,
    User,
)

FactoryColumn = InstrumentedAttribute[str] | InstrumentedAttribute[str | None]


def is_staff(user: User) -> bool:
    """Federation admins and factory operators: they run calls, see reviewers' names, and
    reach what concerns their factories (admins: every factory)."""
    return Role(user.role) in {Role.ADMIN, Role.OPERATOR}


def sees_all(user: User) -> bool:
    """A federation admin: the whole federation, every factory."""
    return Role(user.role) is Role.ADMIN


def require_staff(user: User, what: str = "do this") -> None:
    """Forbidden unless `user` is a federation admin or a factory operator (the role;
    which factory is `require_operator_of`'s question)."""
    if not is_staff(user):
        raise Forbidden(f"only an operator or a federation admin may {what}")


def operated_factories(user: User) -> Select[str]:
    """The ids of the factories `user` operates (none unless an operator)."""
    query = select(OperatorFactory.factory_id).where(OperatorFactory.user_id == user.id)
    if Role(user.role) is not Role.OPERATOR:
        query = query.where(false())
    return query


def factories_of(session: Session, user: User) -> list[str]:
    """The factory ids `user` operates, sorted ([] for anyone but an operator)."""
    return sorted(session.scalars(operated_factories(user)))


def operates(session: Session, user: User, factory_id: str) -> bool:
    """An admin operates every factory; an operator the ones named for them."""
    if sees_all(user):
        return True
    query = operated_factories(user).where(OperatorFactory.factory_id == factory_id)
    return session.scalar(query) is not None


def require_operator_of(session: Session, user: User, factory_id: str, what: str) -> None:
    """Forbidden unless `user` is staff and operates `factory_id`."""
    require_staff(user, what)
    if not operates(session, user, factory_id):
        raise Forbidden(f"only an operator of {factory_id} or a federation admin may {what}")
    if factory_id in user.lacks_mfa_for:
        raise mfa_refusal(factory_id, what)


def in_operated(user: User, column: FactoryColumn) -> ColumnElement[bool]:
    """A filter: `column` (a factory id) is one `user` operates (true for an admin)."""
    if sees_all(user):
        return true()
    return column.in_(operated_factories(user))


INVITED_ROLES = ("invited_member", "invited_admin")  # added, not yet joined


def org_role(session: Session, user: User, org_id: int) -> str | None:
    """`admin` or `member` of the organisation; None for others and pending invitees."""
    role = session.scalar(
        select(OrganisationMember.role).where(
            OrganisationMember.organisation_id == org_id, OrganisationMember.user_id == user.id
        )
    )
    return None if role in INVITED_ROLES else role


def _user_id(user: User | BindParameter[int]) -> int | BindParameter[int]:
    """The user's id, or a parameter bound to it when the statement runs (a statement
    built once and run for every request)."""
    return user if isinstance(user, BindParameter) else user.id


def joined_org_ids(user: User | BindParameter[int]) -> Select[int]:
    return select(OrganisationMember.organisation_id).where(
        OrganisationMember.user_id == _user_id(user),
        OrganisationMember.role.not_in(INVITED_ROLES),
    )


def project_role(session: Session, user: User, project: Project) -> str | None:
    return session.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_pk == project.pk, ProjectMember.user_id == user.id
        )
    )


def operated_project_pks(user: User) -> Select[int]:
    """The pks of the projects with a proposal to a call of a factory `user` operates."""
    return (
        select(Proposal.project_pk)
        .join(Call, Call.id == Proposal.call_id)
        .where(in_operated(user, Call.factory_id))
    )


def visible_org_ids(user: User) -> Select[int]:
    """The organisations `user` has joined; for an operator also those with a project
    that applied to one of their factories."""
    joined = joined_org_ids(user)
    if Role(user.role) is not Role.OPERATOR:
        return joined
    applied = select(Project.organisation_id).where(Project.pk.in_(operated_project_pks(user)))
    return select(Organisation.id).where(
        or_(Organisation.id.in_(joined), Organisation.id.in_(applied))
    )


def visible_org(session: Session, user: User, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or not (
        sees_all(user)
        or session.scalar(
            select(Organisation.id).where(
                Organisation.id == org_id, Organisation.id.in_(visible_org_ids(user))
            )
        )
        is not None
    ):
        raise NotFound(f"no organisation {org_id}", field="org_id")
    return org


def member_project_pks(user: User | BindParameter[int]) -> Select[int]:
    """The pks of the projects `user` belongs to, directly or through its organisation."""
    org_ids = joined_org_ids(user)
    member_of = select(ProjectMember.project_pk).where(ProjectMember.user_id == _user_id(user))
    return select(Project.pk).where(
        or_(Project.pk.in_(member_of), Project.organisation_id.in_(org_ids))
    )


def visible_project_pks(user: User) -> Select[int]:
    """The projects `user` may open: theirs, and for an operator those that applied to
    one of their factories (an admin: use `sees_all` first, this is not every project)."""
    if Role(user.role) is not Role.OPERATOR:
        return member_project_pks(user)
    return select(Project.pk).where(
        or_(Project.pk.in_(member_project_pks(user)), Project.pk.in_(operated_project_pks(user)))
    )


def operated_calls(user: User) -> Select[str]:
    return select(Call.id).where(in_operated(user, Call.factory_id))


def proposal_filter(user: User) -> ColumnElement[bool]:
    """Proposals `user` sees: of their projects, or to calls of factories they operate.
    (Reviewers reach proposals in review through services.access.reviews.)"""
    if sees_all(user):
        return true()
    return or_(
        Proposal.project_pk.in_(member_project_pks(user)),
        Proposal.call_id.in_(operated_calls(user)),
    )


def allocation_filter(user: User) -> ColumnElement[bool]:
    """Allocations `user` sees: of their projects, or at factories they operate."""
    if sees_all(user):
        return true()
    return or_(
        Allocation.project_pk.in_(member_project_pks(user)),
        in_operated(user, Allocation.factory_id),
    )


def job_filter(user: User) -> ColumnElement[bool]:
    """Jobs `user` sees: of their projects, or placed at factories they operate."""
    if sees_all(user):
        return true()
    return or_(Job.project_pk.in_(member_project_pks(user)), in_operated(user, Job.factory_id))


def find_project(session: Session, project_id: str) -> Project | None:
    return session.scalar(select(Project).where(Project.id == project_id))


def visible_project(
    session: Session, user: User, project_id: str, field: str = "project_id"
) -> Project:
    project = find_project(session, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}", field=field)
    if sees_all(user):
        return project
    if session.scalar(visible_project_pks(user).where(Project.pk == project.pk)) is not None:
        return project
    raise NotFound(f"no project {project_id}", field=field)


def require_pi(session: Session, user: User, project: Project) -> None:
    """The PI (or an admin of the project's organisation) manages a project."""
    if project.pi_user_id == user.id or org_role(session, user, project.organisation_id) == (
        "admin"
    ):
        return
    raise Forbidden("only the project's principal investigator may do this")
