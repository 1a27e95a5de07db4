"""An admin lists a user's identities at OpenID Providers and removes one (both
databases); nobody else can, and another user's identity is reported missing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from fabbrica.api.deps import AppContext
from fabbrica.core.federated import Asserted, ProviderConfig
from fabbrica.services import federated
from fabbrica.services.oidc import RelyingParty
from fabbrica.store.models import AuditEntry
from tests.conftest import bearer

API = "/api/v1"
PARTY = RelyingParty(ProviderConfig("uni", "Uni IdP", "https://idp.uni.example", "fabbrica"))


def asserted(subject: str, email: str) -> Asserted:
    return Asserted(PARTY.config.issuer, subject, email, True, "Ada", "member@uni.example",
                    None, "https://refeds.org/profile/mfa", ("pwd", "otp"))  # fmt: skip


def signed_in(api: TestClient, subject: str, email: str) -> int:
    ctx: AppContext = api.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        return federated.sign_in(session, PARTY, asserted(subject, email), ctx.clock()).id


def test_an_admin_lists_and_removes_identities(api: TestClient, admin: dict[str, str]) -> None:
    user_id = signed_in(api, "s-1", "ada@uni.example")
    assert signed_in(api, "s-2", "ada@uni.example") == user_id  # a second identity, same user
    other_id = signed_in(api, "s-3", "bob@uni.example")
    listed = api.get(f"{API}/users/{user_id}/identities", headers=admin)
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [(r["subject"], r["issuer"], r["provider"]) for r in rows] == [
        ("s-1", PARTY.config.issuer, "uni"), ("s-2", PARTY.config.issuer, "uni")]  # fmt: skip
    assert rows[0]["amr"] == "pwd otp" and rows[0]["affiliation"] == "member@uni.example"
    other = api.get(f"{API}/users/{other_id}/identities", headers=admin).json()
    assert (
        api.delete(f"{API}/users/{user_id}/identities/{other[0]['id']}", headers=admin).status_code
        == 404
    )
    assert (
        api.delete(f"{API}/users/{user_id}/identities/{rows[0]['id']}", headers=admin).status_code
        == 204
    )
    left = api.get(f"{API}/users/{user_id}/identities", headers=admin).json()
    assert [r["subject"] for r in left] == ["s-2"]
    ctx: AppContext = api.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        entry = session.query(AuditEntry).filter_by(action="identity_removed").one()
        assert entry.entity_id == str(user_id) and "s-1" in entry.detail
    assert api.get(f"{API}/users/999999/identities", headers=admin).status_code == 404


def test_nobody_but_an_admin_sees_or_removes_identities(
    api: TestClient, admin: dict[str, str]
) -> None:
    user_id = signed_in(api, "s-1", "ada@uni.example")
    made = api.post(f"{API}/users", headers=admin, json={"email": "eve@x.example", "name": "Eve"})
    eve = bearer(made.json()["token"])
    identity_id = api.get(f"{API}/users/{user_id}/identities", headers=admin).json()[0]["id"]
    assert api.get(f"{API}/users/{user_id}/identities", headers=eve).status_code == 403
    removed = api.delete(f"{API}/users/{user_id}/identities/{identity_id}", headers=eve)
    assert removed.status_code == 403
    assert len(api.get(f"{API}/users/{user_id}/identities", headers=admin).json()) == 1
