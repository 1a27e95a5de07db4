from __future__ import annotations

from fastapi import APIRouter, Query, status

from fabbrica.api.deps import ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import MAX_ID, TokenIdPath
from fabbrica.api.schemas import (
    DeviceSignIn,
    ProviderPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from fabbrica.services import federated, identity

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


@router.get("/auth/providers", response_model=list[ProviderPublic])
def sign_in_providers(ctx: ContextDep) -> list[ProviderPublic]:
    """The OpenID Providers `fabbrica login` can sign in with (no token needed)."""
    return [
        ProviderPublic(
            name=party.config.name,
            display_name=party.config.display_name,
            issuer=party.config.issuer,
            cli_client_id=party.config.cli_client_id,
            scopes=list(party.config.scopes),
            mfa_acr=list(party.config.mfa_acr),
        )
        for party in ctx.oidc
        if party.config.cli_client_id is not None
    ]


@router.post("/auth/device", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def device_sign_in(body: DeviceSignIn, ctx: ContextDep, session: SessionDep) -> TokenCreated:
    """Trade the ID token a provider gave `fabbrica login` (device grant) for an API token
    of 30 days; the first sign-in links or makes the account as in the portal."""
    party = ctx.oidc.party(body.provider)
    token, secret = federated.token_for_device(
        session, party, body.id_token, body.access_token, ctx.clock()
    )
    public = TokenPublic.model_validate(token).model_dump()
    return TokenCreated.model_validate({**public, "token": secret})
