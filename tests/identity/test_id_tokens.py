"""Federated sign-in through a real OpenID Provider with a plain HTTP client (both
databases): the first sign-in makes or links the account, the next ones find it; an
unverified address takes nothing over; an ID token that is wrong in any way, a wrong,
spent or foreign `state`: refused, and no session made; a rotated key is picked up."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fabbrica.core.identity import Role
from fabbrica.services import identity
from fabbrica.store.models import Identity, OidcLogin, PortalSession, User
from fabbrica.store.types import utcnow
from tests.identity.conftest import PROVIDER, Portal, follow, http_sign_in, to_callback


def count(portal: Portal, model: type) -> int:
    with portal.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def signed_in_as(answer: httpx.Response, email: str) -> bool:
    return answer.status_code == 200 and f'<a href="/account">{email}</a>' in answer.text


def test_first_sign_in_makes_the_account_and_the_next_finds_it(portal: Portal) -> None:
    account = portal.account(name="Ada Researcher", affiliation=["member@uni.example"])
    assert signed_in_as(http_sign_in(portal, account), account.email)
    users_after_first = count(portal, User)
    assert signed_in_as(http_sign_in(portal, account), account.email)
    assert count(portal, User) == users_after_first
    with portal.ctx.db.session() as session:
        row = session.scalars(select(Identity)).one()
        assert (row.issuer, row.subject, row.provider) == (portal.idp.issuer, account.sub, PROVIDER)
        assert row.user.email == account.email and row.user.name == "Ada Researcher"
        assert row.affiliation == "member@uni.example"
        assert row.acr == "https://refeds.org/profile/sfa" and row.amr == "pwd"
    assert count(portal, PortalSession) == 2


def existing_user(portal: Portal, email: str) -> int:
    with portal.ctx.db.session() as session:
        user, _ = identity.create_user(
            session, email=email, name="Had", role=Role.USER, now=utcnow()
        )
        return user.id


def test_a_verified_address_links_to_the_existing_user_and_two_identities_to_one(
    portal: Portal,
) -> None:
    user_id = existing_user(portal, "pi@uni.example")
    first = portal.account(email="pi@uni.example", email_verified=True)
    second = portal.account(email="PI@uni.example", email_verified=True)
    assert signed_in_as(http_sign_in(portal, first), "pi@uni.example")
    assert signed_in_as(http_sign_in(portal, second), "pi@uni.example")
    with portal.ctx.db.session() as session:
        owners = session.scalars(select(Identity.user_id)).all()
    assert owners == [user_id, user_id]


def test_an_unverified_address_takes_nothing_over(portal: Portal) -> None:
    existing_user(portal, "victim@uni.example")
    sessions = count(portal, PortalSession)
    attacker = portal.account(email="victim@uni.example", email_verified=False)
    answer = http_sign_in(portal, attacker)
    assert answer.status_code == 401 and "has not verified your email" in answer.text
    newcomer = portal.account(email="new@uni.example", email_verified=False)
    assert http_sign_in(portal, newcomer).status_code == 401
    assert (count(portal, Identity), count(portal, PortalSession)) == (0, sessions)
    assert count(portal, User) == 2  # the admin and the victim: nobody made


def previous_nonce(portal: Portal) -> str:
    with portal.ctx.db.session() as session:
        return session.scalars(select(OidcLogin.nonce).order_by(OidcLogin.id.desc())).first() or ""


WRONG: dict[str, tuple[dict[str, Any], str]] = {
    "audience": ({"aud": "someone-else"}, "meant for another client"),
    "issuer": ({"iss": "http://127.0.0.1:1"}, "not issued by Test IdP"),
    "expired": ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 1200}, "expired"),
    "bad signature": ({"foreign_key": True}, "not valid"),
    "replayed nonce": ({}, "answers another sign-in (nonce)"),
}


@pytest.mark.parametrize("what", list(WRONG))
def test_a_wrong_id_token_is_refused_and_no_session_made(portal: Portal, what: str) -> None:
    account = portal.account()
    assert signed_in_as(http_sign_in(portal, account), account.email)
    sessions, users = count(portal, PortalSession), count(portal, User)
    claims, said = WRONG[what]
    if what == "replayed nonce":
        claims = {"nonce": previous_nonce(portal)}
    portal.idp.tamper_next_id_token(**claims)
    answer = http_sign_in(portal, account)
    assert answer.status_code == 401 and said in answer.text, answer.text
    assert fabbrica_session(answer) is None
    assert (count(portal, PortalSession), count(portal, User)) == (sessions, users)


def fabbrica_session(answer: httpx.Response) -> str | None:
    return answer.cookies.get("fabbrica_session")


def test_a_wrong_spent_or_foreign_state_is_refused(portal: Portal) -> None:
    account = portal.account()
    with httpx.Client(timeout=20) as browser, httpx.Client(timeout=20) as other:
        callback = to_callback(browser, portal, account)
        wrong = callback.replace("state=", "state=x")
        assert "unknown, used or expired (state)" in follow(browser, wrong).text
        assert "another browser" in follow(other, callback).text
        callback = to_callback(browser, portal, account)
        assert signed_in_as(follow(browser, callback), account.email)
        replayed = follow(browser, callback)
        assert replayed.status_code == 401 and "unknown, used or expired" in replayed.text
    assert count(portal, PortalSession) == 1


def test_the_provider_rotates_its_key_and_sign_in_goes_on(portal: Portal) -> None:
    account = portal.account()
    assert signed_in_as(http_sign_in(portal, account), account.email)
    kid = portal.idp.rotate_key()
    assert signed_in_as(http_sign_in(portal, account), account.email)
    with httpx.Client() as http:
        published = http.get(f"{portal.idp.issuer}/jwks").json()["keys"]
    assert [key["kid"] for key in published] == [kid]


def test_sign_ins_a_day_past_their_expiry_are_deleted(portal: Portal) -> None:
    old = utcnow() - dt.timedelta(days=2)
    with portal.ctx.db.session() as session:
        session.add(OidcLogin(state_hash="0" * 64, browser_hash="0" * 64, provider=PROVIDER,
                              nonce="n", code_verifier="v", next_path="/", created_at=old,
                              expires_at=old + dt.timedelta(minutes=10)))  # fmt: skip
    account = portal.account()
    assert signed_in_as(http_sign_in(portal, account), account.email)
    with portal.ctx.db.session() as session:
        left = session.scalars(select(OidcLogin.state_hash)).all()
    assert len(left) == 1 and left[0] != "0" * 64
