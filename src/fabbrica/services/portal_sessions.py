"""The portal's sign-in: one-time links sent by email, and browser sessions.

A link is a random secret of which only the hash is stored; it works once, within
`LINK_TTL`. Opening it starts a session: the browser's cookie holds another secret (hash
stored) and every form carries the session's CSRF token. Sessions end on sign-out, when
the user revokes them, after `SESSION_IDLE` without use, at `SESSION_MAX` after sign-in, and
at once when the user is deactivated. An address with no account gets one at its first
sign-in (role `user`): the link proves the address.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.core.errors import InvalidInput, NotFound, Unauthenticated
from fabbrica.core.identity import Role, hash_token
from fabbrica.services import notify
from fabbrica.services.identity import normalise_email
from fabbrica.store.models import PortalSession, SignInLink, User

LINK_TTL = dt.timedelta(minutes=15)
FIRST_ADMIN_LINK_TTL = dt.timedelta(hours=24)  # printed by `fabbrica up` on its first start
LINKS_PER_WINDOW = 5  # links asked for one address within LINK_TTL
SESSION_IDLE = dt.timedelta(hours=12)
SESSION_MAX = dt.timedelta(days=7)
SEEN_RESOLUTION = dt.timedelta(minutes=1)
SIGN_IN_KIND = "sign_in"
SIGN_IN_PATH = "/sign-in/"


@dataclass(frozen=True)
class Started:
    """A session just made: the cookie's secret is known only now."""

    user: User
    secret: str
    session: PortalSession


def link_url(base_url: str, secret: str) -> str:
    return base_url.rstrip("/") + SIGN_IN_PATH + secret


def send_link(session: Session, email: str, *, base_url: str, now: dt.datetime) -> None:
    """Email a one-time sign-in link to `email` (through the outbox). The same answer
    whether or not the address has an account; refused past `LINKS_PER_WINDOW` links
    within `LINK_TTL`, so that nobody floods an inbox."""
    email = normalise_email(email)
    recent = session.scalar(
        select(func.count())
        .select_from(SignInLink)
        .where(SignInLink.email == email, SignInLink.created_at > now - LINK_TTL)
    )
    if (recent or 0) >= LINKS_PER_WINDOW:
        raise InvalidInput(
            f"{LINKS_PER_WINDOW} sign-in links were sent to this address in the last "
            f"{int(LINK_TTL.total_seconds() // 60)} minutes; use the latest or wait",
            field="email",
        )
    user = session.scalar(select(User).where(User.email == email))
    secret = _new_link(session, email, user, now=now, ttl=LINK_TTL)
    minutes = int(LINK_TTL.total_seconds() // 60)
    notify.enqueue(
        session,
        to=email,
        subject="Your Fabbrica sign-in link",
        body=(
            f"Open this link to sign in to Fabbrica:\n\n{link_url(base_url, secret)}\n\n"
            f"It works once, within {minutes} minutes. If you did not ask for it, ignore "
            "this message: nothing happens until the link is opened.\n"
        ),
        kind=SIGN_IN_KIND,
        now=now,
    )


def first_admin_link(session: Session, admin: User, now: dt.datetime) -> str:
    """A one-time link for the federation admin made at bootstrap (the secret)."""
    return _new_link(session, admin.email, admin, now=now, ttl=FIRST_ADMIN_LINK_TTL)


def _new_link(
    session: Session, email: str, user: User | None, *, now: dt.datetime, ttl: dt.timedelta
) -> str:
    secret = secrets.token_urlsafe(32)
    session.add(
        SignInLink(
            token_hash=hash_token(secret),
            email=email,
            user_id=user.id if user is not None else None,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return secret


def redeem(session: Session, secret: str, *, user_agent: str, now: dt.datetime) -> Started:
    """Use a link (once) and start a session; an address without an account gets one."""
    link = session.scalar(
        select(SignInLink).where(SignInLink.token_hash == hash_token(secret)).with_for_update()
    )
    if link is None or link.used_at is not None or link.expires_at <= now:
        raise Unauthenticated("this sign-in link is unknown, used or expired: ask for a new one")
    link.used_at = now
    user = session.get(User, link.user_id) if link.user_id is not None else None
    if user is None:
        user = session.scalar(select(User).where(User.email == link.email))
    if user is None:
        user = User(
            email=link.email,
            name=link.email.split("@", 1)[0][:200],
            role=Role.USER.value,
            active=True,
            created_at=now,
        )
        session.add(user)
        session.flush()
    return start(session, user, user_agent=user_agent, now=now)


def start(
    session: Session,
    user: User,
    *,
    user_agent: str,
    now: dt.datetime,
    acr: str | None = None,
    amr: str | None = None,
    mfa: bool = False,
    provider: str | None = None,
) -> Started:
    """Start a session for `user`, signed in by an email link or an OpenID Provider (then
    with how strongly: `acr`, `amr`, and whether that was multi-factor)."""
    if not user.active:
        raise Unauthenticated("this account is deactivated")
    cookie = secrets.token_urlsafe(32)
    row = PortalSession(
        user_id=user.id,
        token_hash=hash_token(cookie),
        csrf_token=secrets.token_urlsafe(32),
        user_agent=user_agent[:200],
        created_at=now,
        last_seen_at=now,
        expires_at=min(now + SESSION_IDLE, now + SESSION_MAX),
        acr=acr,
        amr=amr,
        mfa=mfa,
        provider=provider,
    )
    session.add(row)
    session.flush()
    return Started(user, cookie, row)


def current(session: Session, secret: str, *, now: dt.datetime) -> PortalSession | None:
    """The live session this cookie secret holds (extended while in use), or None."""
    query = select(PortalSession).where(PortalSession.token_hash == hash_token(secret))
    row = session.scalar(query)
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    if not row.user.active:
        return None
    if now - row.last_seen_at >= SEEN_RESOLUTION:
        row.last_seen_at = now
        row.expires_at = min(now + SESSION_IDLE, row.created_at + SESSION_MAX)
    return row


def end(row: PortalSession, *, now: dt.datetime) -> None:
    if row.ended_at is None:
        row.ended_at = now


def live_sessions(session: Session, user: User, *, now: dt.datetime) -> list[PortalSession]:
    return list(
        session.scalars(
            select(PortalSession)
            .where(
                PortalSession.user_id == user.id,
                PortalSession.ended_at.is_(None),
                PortalSession.expires_at > now,
            )
            .order_by(PortalSession.last_seen_at.desc())
        )
    )


def revoke(session: Session, user: User, session_id: int, *, now: dt.datetime) -> None:
    """End one of the user's own sessions (another user's is reported missing)."""
    row = session.get(PortalSession, session_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"no session {session_id}", field="session_id")
    end(row, now=now)
