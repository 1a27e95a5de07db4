"""The API takes a provider's JWT access tokens (audience `api_audience`), validated
locally against the provider's JWKS (both databases): the user of a linked identity is
served; a token for another audience, of an identity that never signed in, or of a user
an admin suspended is refused on the next request though the token is still valid."""

from __future__ import annotations

import dataclasses

import httpx
from sqlalchemy import select

from fabbrica.store.models import User
from tests.identity.conftest import Portal, api_access_token, http_sign_in


def me(portal: Portal, token: str) -> httpx.Response:
    return httpx.get(f"{portal.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})


def test_a_provider_access_token_works_until_the_user_is_suspended(portal: Portal) -> None:
    account = portal.account()
    token = api_access_token(portal, account)
    never = me(portal, token)
    assert never.status_code == 401 and "has not signed in to Fabbrica yet" in never.text
    assert http_sign_in(portal, account).status_code == 200  # links the identity
    answer = me(portal, token)
    assert answer.status_code == 200 and answer.json()["email"] == account.email
    jobs = httpx.get(f"{portal.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert jobs.status_code == 200 and jobs.json() == []
    with portal.ctx.db.session() as session:  # an admin suspends the user
        session.scalars(select(User).where(User.email == account.email)).one().active = False
    refused = me(portal, token)
    assert refused.status_code == 401 and "deactivated" in refused.text


def test_other_tokens_of_the_provider_are_refused(portal: Portal) -> None:
    account = portal.account()
    assert http_sign_in(portal, account).status_code == 200
    token = api_access_token(portal, account)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert me(portal, forged).status_code == 401
    # the API now wants another audience
    portal.party.config = dataclasses.replace(portal.party.config, api_audience="urn:else")
    refused = me(portal, token)
    assert refused.status_code == 401 and "not meant for Fabbrica" in refused.text
