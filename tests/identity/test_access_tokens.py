"""The API takes a provider's JWT access tokens (audience `api_audience`), validated
locally against the provider's JWKS (both databases): the user of a linked identity is
served; a token for another audience, of an identity that never signed in, or of a user
an admin suspended is refused on the next request though the token is still valid."""

from __future__ import annotations

import dataclasses

import httpx
from sqlalchemy import select

from fabbrica.store.models import AuditEntry
from tests.conftest import ADMIN_TOKEN, bearer
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
    user_id = answer.json()["id"]
    admin = bearer(ADMIN_TOKEN)
    suspended = httpx.post(f"{portal.url}/api/v1/users/{user_id}/suspend", headers=admin,
                           json={"reason": "misuse"})  # fmt: skip
    assert suspended.status_code == 200 and suspended.json()["active"] is False, suspended.text
    refused = me(portal, token)  # the provider's token is still valid: Fabbrica says no
    assert refused.status_code == 401 and "deactivated" in refused.text
    again = httpx.post(f"{portal.url}/api/v1/users/{user_id}/suspend", headers=admin,
                       json={"reason": "twice"})  # fmt: skip
    assert again.status_code == 409, again.text
    back = httpx.post(f"{portal.url}/api/v1/users/{user_id}/reactivate", headers=admin,
                      json={"reason": "cleared"})  # fmt: skip
    assert back.status_code == 200 and back.json()["active"] is True, back.text
    assert me(portal, token).status_code == 200
    with portal.ctx.db.session() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.entity_id == str(user_id))
        ).all()
    assert [a for a in actions if a in ("suspend", "reactivate")] == ["suspend", "reactivate"]


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
