from __future__ import annotations

from fastapi import APIRouter, status

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import IdentityIdPath, UserIdPath
from fabbrica.api.schemas import (
    IdentityPublic,
    UserCreate,
    UserCreated,
    UserFactories,
    UserPublic,
    UserStatusChange,
)
from fabbrica.services import federated, identity

router = APIRouter(tags=["users"])


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    """The user the token belongs to."""
    return UserPublic.model_validate(user)


@router.post("/users", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
def create_user(
    body: UserCreate, ctx: ContextDep, session: SessionDep, catalog: CatalogDep, actor: CurrentUser
) -> UserCreated:
    """Create a user (admin only). The answer carries the user's first token, once. An
    operator is created with the factories it operates (`factories`)."""
    identity.require_admin(actor)
    user, secret = identity.create_user(
        session,
        email=body.email,
        name=body.name,
        role=body.role,
        now=ctx.clock(),
        factories=body.factories,
        known_factories={f.id for f in catalog.factories},
    )
    return UserCreated.model_validate({**_public(user), "token": secret})


@router.put("/users/{user_id}/factories", response_model=UserPublic)
def set_factories(
    user_id: UserIdPath,
    body: UserFactories,
    ctx: ContextDep,
    session: SessionDep,
    catalog: CatalogDep,
    actor: CurrentUser,
) -> UserPublic:
    """Replace the factories an operator operates (admin only; audited)."""
    user = identity.set_factories(
        session,
        actor,
        user_id,
        body.factories,
        known_factories={f.id for f in catalog.factories},
        now=ctx.clock(),
    )
    return UserPublic.model_validate(user)


@router.post("/users/{user_id}/suspend", response_model=UserPublic)
def suspend_user(
    user_id: UserIdPath,
    body: UserStatusChange,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> UserPublic:
    """Suspend a user (admin only; audited): refused at their next request, with any token,
    portal session or provider access token they hold. 409 if already suspended."""
    user = identity.set_active(
        session, actor, user_id, active=False, reason=body.reason, now=ctx.clock()
    )
    return UserPublic.model_validate(_public(user))


@router.post("/users/{user_id}/reactivate", response_model=UserPublic)
def reactivate_user(
    user_id: UserIdPath,
    body: UserStatusChange,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> UserPublic:
    """Let a suspended user back in (admin only; audited). 409 if already active."""
    user = identity.set_active(
        session, actor, user_id, active=True, reason=body.reason, now=ctx.clock()
    )
    return UserPublic.model_validate(_public(user))


@router.get("/users", response_model=list[UserPublic])
def list_users(session: SessionDep, actor: CurrentUser) -> list[UserPublic]:
    """All users (admin only)."""
    return [UserPublic.model_validate(u) for u in identity.list_users(session, actor)]


@router.get("/users/{user_id}", response_model=UserPublic)
def get_user(user_id: UserIdPath, session: SessionDep, actor: CurrentUser) -> UserPublic:
    """One user: yourself, or anyone for an admin."""
    return UserPublic.model_validate(identity.get_user(session, actor, user_id))


@router.get("/users/{user_id}/identities", response_model=list[IdentityPublic])
def list_identities(
    user_id: UserIdPath, session: SessionDep, actor: CurrentUser
) -> list[IdentityPublic]:
    """A user's identities at OpenID Providers (admin only)."""
    rows = federated.identities(session, actor, user_id)
    return [IdentityPublic.model_validate(row) for row in rows]


@router.delete("/users/{user_id}/identities/{identity_id}", status_code=204)
def remove_identity(
    user_id: UserIdPath,
    identity_id: IdentityIdPath,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
) -> None:
    """Unlink an identity from a user (admin only; audited): its next sign-in is a first
    one again (linked by a verified address, or a new user)."""
    federated.remove_identity(session, actor, user_id, identity_id, ctx.clock())


def _public(user: object) -> dict[str, object]:
    return UserPublic.model_validate(user).model_dump()
