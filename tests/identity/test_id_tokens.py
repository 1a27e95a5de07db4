"""Federated sign-in through a real OpenID Provider with a plain HTTP client (both
databases): the first sign-in makes or links the account, the next ones find it; an ID
token that is wrong in any way, a wrong or spent `state`: refused, and no session made."""

from __future__ import annotations

from sqlalchemy import func, select

from fabbrica.store.models import Identity, PortalSession, User
from tests.identity.conftest import PROVIDER, Portal, http_sign_in


def count(portal: Portal, model: type) -> int:
    with portal.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_first_sign_in_makes_the_account_and_the_next_finds_it(portal: Portal) -> None:
    account = portal.account(name="Ada Researcher", affiliation=["member@uni.example"])
    first = http_sign_in(portal, account)
    assert first.status_code == 200 and account.email in first.text, first.text
    users_after_first = count(portal, User)
    second = http_sign_in(portal, account)
    assert second.status_code == 200 and account.email in second.text
    assert count(portal, User) == users_after_first
    with portal.ctx.db.session() as session:
        row = session.scalars(select(Identity)).one()
        assert (row.issuer, row.subject, row.provider) == (portal.idp.issuer, account.sub, PROVIDER)
        assert row.user.email == account.email and row.user.name == "Ada Researcher"
        assert row.affiliation == "member@uni.example" and row.acr is not None
    assert count(portal, PortalSession) == 2
