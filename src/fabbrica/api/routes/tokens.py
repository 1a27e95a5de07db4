from __future__ import annotations

from fastapi import APIRouter, Query, status

from fabbrica.api.deps import ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import MAX_ID, TokenIdPath
from fabbrica.api.schemas import TokenCreate, TokenCreated, TokenPublic
from fabbrica.services import identity

router = APIRouter(tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> TokenCreated:
    """A new API token for yourself (or, for an admin, for `user_id`). Shown once."""
    token, secret = identity.create_token(
        session,
        actor,
        name=body.name,
        now=ctx.clock(),
        user_id=body.user_id,
        expires_in_days=body.expires_in_days,
    )
    public = TokenPublic.model_validate(token).model_dump()
    return TokenCreated.model_validate({**public, "token": secret})


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(
    session: SessionDep,
    actor: CurrentUser,
    user_id: int | None = Query(
        default=None, ge=0, le=MAX_ID, description="admin: a user, or 0 for all"
    ),
) -> list[TokenPublic]:
    """Your tokens (never their secrets); an admin may list another user's, or all."""
    tokens = identity.list_tokens(session, actor, user_id=user_id)
    return [TokenPublic.model_validate(t) for t in tokens]


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def revoke_token(
    token_id: TokenIdPath, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> TokenPublic:
    """Revoke a token at once. Revoking twice is harmless."""
    return TokenPublic.model_validate(
        identity.revoke_token(session, actor, token_id, now=ctx.clock())
    )
