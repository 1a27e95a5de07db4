"""Sign-in links and portal sessions, on both databases: once, within 15 minutes, a
bounded number per address, sessions that end when they should."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from fabbrica.core.errors import InvalidInput, NotFound, Unauthenticated
from fabbrica.core.identity import Role
from fabbrica.services import identity, portal_sessions
from fabbrica.store.db import Database
from fabbrica.store.models import OutboxEmail, User
from tests.conftest import Clock

BASE = "https://portal.example"


def _link(db: Database, email: str, now: dt.datetime) -> str:
    """Ask for a link and read its secret back from the outbox, as the user would."""
    with db.session() as session:
        portal_sessions.send_link(session, email, base_url=BASE, now=now)
    with db.session() as session:
        body = session.scalars(select(OutboxEmail.body).order_by(OutboxEmail.id.desc())).first()
    assert body is not None
    return body.split(f"{BASE}/sign-in/")[1].split()[0]


def test_a_link_signs_in_once_and_a_new_address_gets_an_account(db: Database, clock: Clock) -> None:
    secret = _link(db, "Founder@Startup.it", clock())
    with db.session() as session:
        started = portal_sessions.redeem(session, secret, user_agent="test", now=clock())
        assert (started.user.email, started.user.role) == ("founder@startup.it", "user")
        cookie = started.secret
    with db.session() as session:
        row = portal_sessions.current(session, cookie, now=clock())
        assert row is not None and row.user.email == "founder@startup.it"
    with db.session() as session, pytest.raises(Unauthenticated):
        portal_sessions.redeem(session, secret, user_agent="test", now=clock())
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_a_link_expires_after_15_minutes(db: Database, clock: Clock) -> None:
    secret = _link(db, "late@startup.it", clock())
    later = clock() + portal_sessions.LINK_TTL
    with db.session() as session, pytest.raises(Unauthenticated, match="expired"):
        portal_sessions.redeem(session, secret, user_agent="", now=later)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


def test_an_address_gets_a_bounded_number_of_links(db: Database, clock: Clock) -> None:
    for _ in range(portal_sessions.LINKS_PER_WINDOW):
        _link(db, "flood@startup.it", clock())
    with db.session() as session, pytest.raises(InvalidInput) as refused:
        portal_sessions.send_link(session, "flood@startup.it", base_url=BASE, now=clock())
    assert refused.value.field == "email"
    with db.session() as session:
        sent = session.scalar(select(func.count()).select_from(OutboxEmail))
    assert sent == portal_sessions.LINKS_PER_WINDOW
    _link(db, "flood@startup.it", clock() + portal_sessions.LINK_TTL)  # the window moved on


def test_not_an_email_address_is_refused_and_nothing_is_sent(db: Database, clock: Clock) -> None:
    with db.session() as session, pytest.raises(InvalidInput) as refused:
        portal_sessions.send_link(session, "not-an-address", base_url=BASE, now=clock())
    assert refused.value.field == "email"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEmail)) == 0


def _signed_in(db: Database, email: str, now: dt.datetime) -> tuple[int, str]:
    secret = _link(db, email, now)
    with db.session() as session:
        started = portal_sessions.redeem(session, secret, user_agent="", now=now)
        return started.session.id, started.secret


def test_sessions_end_idle_at_the_latest_and_on_revocation(db: Database, clock: Clock) -> None:
    _, idle = _signed_in(db, "a@startup.it", clock())
    with db.session() as session:
        assert portal_sessions.current(session, idle, now=clock() + dt.timedelta(hours=11))
        later = clock() + dt.timedelta(hours=11) + portal_sessions.SESSION_IDLE
        assert portal_sessions.current(session, idle, now=later) is None
    session_id, cookie = _signed_in(db, "a@startup.it", clock())
    with db.session() as session:
        user = session.scalars(select(User).where(User.email == "a@startup.it")).one()
        assert len(portal_sessions.live_sessions(session, user, now=clock())) == 2
        portal_sessions.revoke(session, user, session_id, now=clock())
    with db.session() as session:
        assert portal_sessions.current(session, cookie, now=clock()) is None


def test_a_user_cannot_end_another_users_session(db: Database, clock: Clock) -> None:
    theirs, cookie = _signed_in(db, "a@startup.it", clock())
    _signed_in(db, "b@startup.it", clock())
    with db.session() as session:
        other = session.scalars(select(User).where(User.email == "b@startup.it")).one()
        with pytest.raises(NotFound):
            portal_sessions.revoke(session, other, theirs, now=clock())
    with db.session() as session:
        assert portal_sessions.current(session, cookie, now=clock()) is not None


def test_a_deactivated_user_loses_the_session_at_once(db: Database, clock: Clock) -> None:
    with db.session() as session:
        identity.create_user(session, email="x@startup.it", name="X", role=Role.USER, now=clock())
    _, cookie = _signed_in(db, "x@startup.it", clock())
    with db.session() as session:
        session.scalars(select(User).where(User.email == "x@startup.it")).one().active = False
    with db.session() as session:
        assert portal_sessions.current(session, cookie, now=clock()) is None


def test_the_first_admin_link_works_once(db: Database, clock: Clock) -> None:
    with db.session() as session:
        made = identity.bootstrap(session, now=clock())
        assert made is not None
        secret = portal_sessions.first_admin_link(session, made[0], clock())
    with db.session() as session:
        started = portal_sessions.redeem(session, secret, user_agent="", now=clock())
        assert started.user.role == "admin"
    with db.session() as session, pytest.raises(Unauthenticated):
        portal_sessions.redeem(session, secret, user_agent="", now=clock())
