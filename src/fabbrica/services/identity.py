"""Users and API tokens: create, list, authenticate, revoke, bootstrap."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Collection, Sequence
from functools import cache

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, joinedload

from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from fabbrica.core.identity import TOKEN_PREFIX, Role, hash_token, may_manage_users, token_hint
from fabbrica.core.text import clean_text
from fabbrica.store.models import ApiToken, AuditEntry, OperatorFactory, User

# A deliberately plain address: the characters of RFC 5322's dot-atom, no quoting, no
# comments, no lists, so that the address stored is the one mail is delivered to.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}|localhost"
EMAIL = re.compile(rf"^(?=.{{1,64}}@){_LOCAL}@(?:{_DOMAIN})$")
BOOTSTRAP_EMAIL = "admin@localhost"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def normalise_email(email: str) -> str:
    email = clean_text(email, "email", max_len=254).lower()
    if not EMAIL.match(email):
        raise InvalidInput(f"not an email address: {email[:80]!r}", field="email")
    return email


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    role: Role,
    now: dt.datetime,
    factories: Sequence[str] = (),
    known_factories: Collection[str] = (),
) -> tuple[User, str]:
    """Create a user and their first API token; returns the token's secret (shown once).
    An operator is given the `factories` it operates (ids among `known_factories`)."""
    email = normalise_email(email)
    name = clean_text(name, "name", max_len=200)
    if role is Role.AGENT:
        raise InvalidInput(
            "site agents are not added as users: `fabbrica agent token --factory ID`", "role"
        )
    operated = _factory_ids(role, factories, known_factories)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists", field="email")
    user = User(email=email, name=name, role=role.value, active=True, created_at=now)
    user.operated = [OperatorFactory(factory_id=f) for f in operated]
    session.add(user)
    session.flush()
    _, secret = issue_token(session, user, name="default", now=now)
    return user, secret


def _factory_ids(
    role: Role, factories: Sequence[str], known_factories: Collection[str]
) -> list[str]:
    """The distinct factory ids, each checked against the catalog's (422 `factories`)."""
    wanted = sorted({f.strip() for f in factories})
    if not wanted:
        return []
    if role is not Role.OPERATOR:
        raise InvalidInput(
            f"only an operator operates factories (this user's role is {role.value})",
            field="factories",
        )
    unknown = [f for f in wanted if f not in known_factories]
    if unknown:
        raise InvalidInput(
            f"no factory {', '.join(repr(f[:64]) for f in unknown[:5])} in the catalog "
            "(see `fabbrica catalog`)",
            field="factories",
        )
    return wanted


def set_factories(
    session: Session,
    actor: User,
    user_id: int,
    factories: Sequence[str],
    *,
    known_factories: Collection[str],
    now: dt.datetime,
) -> User:
    """Replace the factories an operator operates (admin only)."""
    require_admin(actor)
    user = get_user(session, actor, user_id)
    operated = _factory_ids(Role(user.role), factories, known_factories)
    before = user.factories
    user.operated = [OperatorFactory(factory_id=f) for f in operated]
    session.flush()
    session.add(
        AuditEntry(
            at=now,
            actor_id=actor.id,
            entity="user",
            entity_id=str(user.id),
            action="set_factories",
            detail=json.dumps({"before": before, "after": operated}),
        )
    )
    return user


def set_active(
    session: Session, actor: User, user_id: int, *, active: bool, reason: str, now: dt.datetime
) -> User:
    """Suspend a user (admin only, never oneself) or let them back in; audited. A suspended
    user is refused at their next request, whatever they hold: Fabbrica tokens, portal
    sessions, an OpenID Provider's access tokens (each checks `active`)."""
    require_admin(actor)
    reason = clean_text(reason, "reason", max_len=2000, multiline=True)
    user = get_user(session, actor, user_id)
    if user.id == actor.id and not active:
        raise Conflict("you cannot suspend yourself", field="user_id")
    if user.active == active:
        raise Conflict(f"user {user.id} is already {'active' if active else 'suspended'}", "active")
    user.active = active
    session.add(
        AuditEntry(
            at=now,
            actor_id=actor.id,
            entity="user",
            entity_id=str(user.id),
            action="reactivate" if active else "suspend",
            detail=json.dumps({"reason": reason}),
        )
    )
    return user


def list_users(session: Session, actor: User) -> list[User]:
    require_admin(actor)
    return list(session.scalars(select(User).order_by(User.id)))


def get_user(session: Session, actor: User, user_id: int) -> User:
    if actor.id != user_id:
        require_admin(actor)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}", field="user_id")
    return user


def apply_mfa_policy(user: User, mfa_factories: Collection[str]) -> User:
    """Mark the factories (those whose catalog entry requires multi-factor authentication)
    this request may not act on as operator or send jobs to, when its sign-in was not
    multi-factor. Called where a request is authenticated (API, portal)."""
    user.lacks_mfa_for = frozenset() if user.signed_in_with_mfa else frozenset(mfa_factories)
    return user


def mfa_refusal(factory_id: str, what: str) -> Forbidden:
    return Forbidden(
        f"{factory_id} requires multi-factor authentication to {what}: sign in again with "
        "MFA (`fabbrica login --mfa`, or the portal's sign-in with multi-factor "
        "authentication)"
    )


def require_admin(actor: User) -> None:
    if not may_manage_users(Role(actor.role)):
        raise Forbidden("only a federation admin may do this")


def issue_token(
    session: Session,
    user: User,
    *,
    name: str,
    now: dt.datetime,
    expires_at: dt.datetime | None = None,
    secret: str | None = None,
) -> tuple[ApiToken, str]:
    """Store the hash of a new token for `user`; the secret is returned and never stored."""
    name = clean_text(name, "name", max_len=100)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expiry must be in the future", field="expires_in_days")
    secret = secret or new_token_secret()
    digest = hash_token(secret)
    if session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is not None:
        raise Conflict("this token is already in use", field="token")
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=digest,
        hint=token_hint(secret),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, secret


def create_token(
    session: Session,
    actor: User,
    *,
    name: str,
    now: dt.datetime,
    user_id: int | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    owner = actor if user_id is None or user_id == actor.id else get_user(session, actor, user_id)
    if not owner.active:
        raise Conflict(f"user {owner.id} is deactivated", field="user_id")
    if expires_in_days is not None and expires_in_days < 1:
        raise InvalidInput("expiry must be at least one day", field="expires_in_days")
    expires_at = now + dt.timedelta(days=expires_in_days) if expires_in_days else None
    return issue_token(session, owner, name=name, now=now, expires_at=expires_at)


def list_tokens(session: Session, actor: User, *, user_id: int | None = None) -> list[ApiToken]:
    """The actor's tokens; an admin may name another user (or all with user_id=0)."""
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is None:
        query = query.where(ApiToken.user_id == actor.id)
    else:
        if user_id != actor.id:
            require_admin(actor)
        if user_id != 0:
            get_user(session, actor, user_id)  # 404 for a user that does not exist
            query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))


def revoke_token(session: Session, actor: User, token_id: int, *, now: dt.datetime) -> ApiToken:
    token = session.get(ApiToken, token_id)
    # Another user's token is reported missing, not forbidden: ids of others stay private.
    if token is None or (token.user_id != actor.id and Role(actor.role) is not Role.ADMIN):
        raise NotFound(f"no token {token_id}", field="token_id")
    if token.revoked_at is None:
        token.revoked_at = now
    return token


@cache
def _token_query() -> Select[ApiToken]:
    """A token by its hash, with its user: one round trip. Built once (every request runs
    it): SQLAlchemy then skips building the statement and its cache key each time."""
    by_hash = ApiToken.token_hash == bindparam("token_hash")
    return select(ApiToken).options(joinedload(ApiToken.user)).where(by_hash)


def authenticate(session: Session, secret: str, *, now: dt.datetime) -> User:
    """The active user holding this token, or Unauthenticated."""
    token = session.scalar(_token_query(), {"token_hash": hash_token(secret)})
    if token is None or token.revoked_at is not None:
        raise Unauthenticated("invalid or revoked token")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated("token expired")
    user = token.user
    if not user.active:
        raise Unauthenticated("user is deactivated")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
    user.signed_in_with_mfa = token.mfa
    return user


def bootstrap(
    session: Session, *, now: dt.datetime, token: str | None = None
) -> tuple[User, str] | None:
    """On an empty database, create the federation admin. Returns it and its token secret.

    With `token` (FABBRICA_BOOTSTRAP_TOKEN) that text becomes the admin's token; otherwise a
    random one is made. Does nothing, and returns None, once any user exists.
    """
    if session.scalar(select(func.count()).select_from(User)):
        return None
    admin = User(
        email=BOOTSTRAP_EMAIL, name="Federation admin", role=Role.ADMIN.value, created_at=now
    )
    session.add(admin)
    session.flush()
    _, secret = issue_token(session, admin, name="bootstrap", now=now, secret=token)
    return admin, secret
