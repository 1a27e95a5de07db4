"""Federated sign-in's rules: sign-ins under way (state, nonce, PKCE, bound to a browser),
and the accounts an identity at a provider leads to.

An identity is (issuer, subject). Its first sign-in links it to the user with the same
email address when the provider says that address is verified, or makes a new user; an
unverified address never takes over an existing account, nor makes one (the address could
later be claimed by the email link of its real owner). A user may hold several identities;
an admin can list and remove them.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from authlib.common.security import generate_token
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fabbrica.core.errors import InvalidInput, NotFound, Unauthenticated
from fabbrica.core.federated import Asserted, assert_claims, is_multi_factor
from fabbrica.core.identity import Role, hash_token
from fabbrica.services.access import audit
from fabbrica.services.identity import issue_token, normalise_email, require_admin
from fabbrica.services.oidc import Providers, RelyingParty, unverified_issuer
from fabbrica.store.models import ApiToken, Identity, OidcLogin, User

LOGIN_TTL = dt.timedelta(minutes=10)
LOGIN_KEPT = dt.timedelta(days=1)  # spent or expired sign-ins are deleted a day later


@dataclass(frozen=True)
class Pending:
    """A sign-in taken back from the database (used: it cannot come back twice)."""

    provider: str
    nonce: str
    code_verifier: str
    next_path: str


def begin(
    session: Session,
    party: RelyingParty,
    *,
    redirect_uri: str,
    browser: str,
    next_path: str,
    now: dt.datetime,
    acr_values: str | None = None,
) -> str:
    """Record a sign-in for this browser (its cookie secret) and return the provider's
    authorization URL: PKCE (S256), a fresh `state` and `nonce`."""
    session.execute(delete(OidcLogin).where(OidcLogin.expires_at < now - LOGIN_KEPT))
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = generate_token(64)
    url = party.authorization_url(
        redirect_uri, state=state, nonce=nonce, code_verifier=verifier, acr_values=acr_values
    )
    session.add(
        OidcLogin(
            state_hash=hash_token(state),
            browser_hash=hash_token(browser),
            provider=party.config.name,
            nonce=nonce,
            code_verifier=verifier,
            next_path=next_path[:500],
            created_at=now,
            expires_at=now + LOGIN_TTL,
        )
    )
    return url


def take(session: Session, *, state: str, browser: str, now: dt.datetime) -> Pending:
    """The sign-in this `state` answers, once, and only in the browser that began it."""
    row = session.scalar(
        select(OidcLogin).where(OidcLogin.state_hash == hash_token(state)).with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise Unauthenticated("this sign-in is unknown, used or expired (state): start again")
    row.used_at = now
    if not secrets.compare_digest(row.browser_hash, hash_token(browser)):
        raise Unauthenticated("this sign-in was started in another browser (state): start again")
    return Pending(row.provider, row.nonce, row.code_verifier, row.next_path)


def sign_in(session: Session, party: RelyingParty, asserted: Asserted, now: dt.datetime) -> User:
    """The user this identity leads to, linked or made at its first sign-in."""
    found = session.scalar(
        select(Identity).where(
            Identity.issuer == asserted.issuer, Identity.subject == asserted.subject
        )
    )
    if found is None:
        user = _user_for_new_identity(session, party, asserted, now)
        found = Identity(
            user_id=user.id,
            provider=party.config.name,
            issuer=asserted.issuer,
            subject=asserted.subject[:255],
            created_at=now,
        )
        session.add(found)
    _remember(found, asserted, now)
    session.flush()
    user = found.user if found.user is not None else session.get(User, found.user_id)
    assert user is not None
    if not user.active:
        raise Unauthenticated("this account is deactivated")
    return user


def _user_for_new_identity(
    session: Session, party: RelyingParty, asserted: Asserted, now: dt.datetime
) -> User:
    name = party.config.display_name
    if not asserted.email:
        raise Unauthenticated(f"{name} did not tell Fabbrica your email address")
    try:
        email = normalise_email(asserted.email)
    except InvalidInput as exc:
        raise Unauthenticated(f"{name} sent an email address Fabbrica cannot use") from exc
    if not asserted.email_verified:
        raise Unauthenticated(
            f"{name} has not verified your email address {email}: sign in with an email "
            "link instead, or verify the address with your identity provider"
        )
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(
            email=email,
            name=(asserted.name or email.split("@", 1)[0])[:200],
            role=Role.USER.value,
            active=True,
            created_at=now,
        )
        session.add(user)
        session.flush()
    return user


def _remember(row: Identity, asserted: Asserted, now: dt.datetime) -> None:
    row.email = asserted.email[:254] if asserted.email else None
    row.email_verified = asserted.email_verified
    row.name = asserted.name[:200] if asserted.name else None
    row.affiliation = asserted.affiliation[:500] if asserted.affiliation else None
    row.assurance = asserted.assurance[:500] if asserted.assurance else None
    row.acr = asserted.acr[:200] if asserted.acr else None
    row.amr = " ".join(asserted.amr)[:200] or None
    row.last_sign_in_at = now


CLI_TOKEN_DAYS = 30


def token_for_device(
    session: Session, party: RelyingParty, id_token: str, access_token: str, now: dt.datetime
) -> tuple[ApiToken, str]:
    """`fabbrica login` through the device grant: the ID token the provider gave the CLI
    (its audience the provider's `cli_client_id`, validated like the portal's), with the
    userinfo its access token reads, signs the person in like the portal does, and buys a
    Fabbrica API token of `CLI_TOKEN_DAYS`."""
    audience = party.config.cli_client_id
    if audience is None:
        raise NotFound(f"{party.config.display_name} has no CLI client", field="provider")
    claims = party.validate_id_token(id_token, nonce=None, now=now.timestamp(), audience=audience)
    claims = party.with_userinfo(claims, access_token)
    asserted = assert_claims(party.config, claims)
    user = sign_in(session, party, asserted, now)
    token, secret = issue_token(
        session,
        user,
        name=f"fabbrica login ({party.config.display_name})"[:100],
        now=now,
        expires_at=now + dt.timedelta(days=CLI_TOKEN_DAYS),
    )
    token.mfa = multi_factor(party, asserted)
    return token, secret


def user_for_access_token(
    session: Session, providers: Providers, token: str, now: dt.datetime
) -> User:
    """The active user whose identity a provider's JWT access token speaks for (validated
    locally against the provider's JWKS, audience checked). The identity must have signed
    in once (portal or `fabbrica login`): an access token carries no verified address."""
    party = providers.by_issuer(unverified_issuer(token))
    if party is None:
        raise Unauthenticated("invalid or revoked token")
    claims = party.validate_access_token(token, now=now.timestamp())
    found = session.scalar(
        select(Identity).where(
            Identity.issuer == party.config.issuer, Identity.subject == str(claims["sub"])
        )
    )
    if found is None:
        raise Unauthenticated(
            f"this {party.config.display_name} account has not signed in to Fabbrica yet: "
            "sign in once in the portal or with `fabbrica login`"
        )
    if not found.user.active:
        raise Unauthenticated("user is deactivated")
    asserted = assert_claims(party.config, claims)
    found.user.signed_in_with_mfa = multi_factor(party, asserted)
    return found.user


def multi_factor(party: RelyingParty, asserted: Asserted) -> bool:
    return is_multi_factor(asserted.acr, asserted.amr, party.config.mfa_acr)


def identities(session: Session, actor: User, user_id: int) -> list[Identity]:
    """A user's identities (admin only)."""
    require_admin(actor)
    if session.get(User, user_id) is None:
        raise NotFound(f"no user {user_id}", field="user_id")
    query = select(Identity).where(Identity.user_id == user_id).order_by(Identity.id)
    return list(session.scalars(query))


def remove_identity(
    session: Session, actor: User, user_id: int, identity_id: int, now: dt.datetime
) -> None:
    """Unlink an identity (admin only; audited): its next sign-in is a first one again."""
    require_admin(actor)
    row = session.get(Identity, identity_id)
    if row is None or row.user_id != user_id:
        raise NotFound(f"no identity {identity_id} for user {user_id}", field="identity_id")
    audit.record(
        session,
        actor=actor,
        entity="user",
        entity_id=user_id,
        action="identity_removed",
        now=now,
        issuer=row.issuer,
        subject=row.subject,
    )
    session.delete(row)
