from __future__ import annotations

from fastapi import APIRouter, Path, Query, status

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import ID_PATTERN, MAX_ID
from fabbrica.api.present import project_public
from fabbrica.api.schemas_access import (
    InvitationAccept,
    InvitationCreate,
    InvitationPublic,
    ProjectCreate,
    ProjectPublic,
    UserRef,
)
from fabbrica.services.access import projects
from fabbrica.services.access.visibility import visible_project

router = APIRouter(tags=["projects"])
ProjectId = Path(
    min_length=1, max_length=40, pattern=ID_PATTERN, description="e.g. FAB-AIF-2026PG11-0007"
)


@router.post("/projects", response_model=ProjectPublic, status_code=status.HTTP_201_CREATED)
def create_project(
    body: ProjectCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> ProjectPublic:
    """Create a project in one of your organisations; you become its PI."""
    project = projects.create_project(
        session,
        actor,
        catalog,
        title=body.title,
        org_id=body.org_id,
        mode=body.mode,
        now=ctx.clock(),
    )
    return project_public(session, project)


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(
    session: SessionDep,
    actor: CurrentUser,
    org_id: int | None = Query(default=None, ge=1, le=MAX_ID),
) -> list[ProjectPublic]:
    """Projects you belong to, directly or through your organisation (staff: all)."""
    return [project_public(session, p) for p in projects.list_projects(session, actor, org_id)]


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(
    session: SessionDep, actor: CurrentUser, project_id: str = ProjectId
) -> ProjectPublic:
    """One project with its members."""
    return project_public(session, visible_project(session, actor, project_id))


@router.post(
    "/projects/{project_id}/invitations",
    response_model=InvitationPublic,
    status_code=status.HTTP_201_CREATED,
)
def invite(
    body: InvitationCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    project_id: str = ProjectId,
) -> InvitationPublic:
    """The PI invites someone by email; the token goes out by email."""
    invitation, token = projects.invite(
        session, actor, project_id=project_id, email=body.email, now=ctx.clock()
    )
    return InvitationPublic(
        id=invitation.id,
        project=project_id,
        email=invitation.email,
        expires_at=invitation.expires_at,
        token=token,
    )


@router.post("/invitations/accept", response_model=ProjectPublic)
def accept_invitation(
    body: InvitationAccept, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> ProjectPublic:
    """Accept an invitation sent to your email; you join the project as a member."""
    project = projects.accept(session, actor, token=body.token, now=ctx.clock())
    return project_public(session, project)


@router.delete("/projects/{project_id}/members/{user_id}", response_model=ProjectPublic)
def remove_member(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    project_id: str = ProjectId,
    user_id: int = Path(ge=1, le=MAX_ID),
) -> ProjectPublic:
    """The PI removes a member."""
    project = projects.remove_member(
        session, actor, project_id=project_id, user_id=user_id, now=ctx.clock()
    )
    return project_public(session, project)


@router.post("/projects/{project_id}/pi", response_model=ProjectPublic)
def transfer_pi(
    body: UserRef,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    project_id: str = ProjectId,
) -> ProjectPublic:
    """The PI hands the PI role to a member."""
    project = projects.transfer_pi(
        session, actor, project_id=project_id, user_id=body.user_id, now=ctx.clock()
    )
    return project_public(session, project)
