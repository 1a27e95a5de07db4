"""Federated sign-in's pure parts: claims through a provider's claim map, what counts as
multi-factor, and providers read from FABBRICA_OIDC_PROVIDERS."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fabbrica.core.federated import (
    MFA_ACR,
    ClaimMap,
    ProviderConfig,
    assert_claims,
    is_multi_factor,
)
from fabbrica.settings import Settings

CONFIG = ProviderConfig(
    name="myaccessid",
    display_name="MyAccessID",
    issuer="https://proxy.myaccessid.org/",
    client_id="fabbrica",
    claims=ClaimMap(affiliation="eduperson_scoped_affiliation"),
)


def test_claims_go_through_the_claim_map() -> None:
    asserted = assert_claims(CONFIG, {
        "sub": "abc@myaccessid.org", "email": "Ada@Uni.example", "email_verified": "true",
        "name": "Ada", "eduperson_scoped_affiliation": ["member@uni.example", "staff@uni.example"],
        "eduperson_assurance": ["https://refeds.org/assurance/IAP/medium"],
        "acr": MFA_ACR, "amr": ["pwd", "otp"],
    })  # fmt: skip
    assert asserted.subject == "abc@myaccessid.org" and asserted.issuer == CONFIG.issuer
    assert asserted.email == "Ada@Uni.example" and asserted.email_verified
    assert asserted.affiliation == "member@uni.example staff@uni.example"
    assert asserted.assurance == "https://refeds.org/assurance/IAP/medium"
    assert (asserted.acr, asserted.amr) == (MFA_ACR, ("pwd", "otp"))


@pytest.mark.parametrize("value", [False, "false", "yes", 1, None])
def test_only_a_true_email_verified_counts(value: object) -> None:
    assert not assert_claims(CONFIG, {"sub": "s", "email_verified": value}).email_verified


@pytest.mark.parametrize(
    ("acr", "amr", "mfa"),
    [(MFA_ACR, (), True), ("https://refeds.org/profile/sfa", ("pwd",), False),
     (None, ("pwd", "otp"), True), (None, (), False), ("urn:other", ("pwd",), False)],
)  # fmt: skip
def test_what_counts_as_multi_factor(acr: str | None, amr: tuple[str, ...], mfa: bool) -> None:
    assert is_multi_factor(acr, amr, CONFIG.mfa_acr) is mfa


def test_providers_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    item = {"name": "keycloak", "display_name": "Our Keycloak", "issuer": "https://kc/realms/f",
            "client_id": "fabbrica", "client_secret": "s3cret", "scopes": ["email", "profile"],
            "claims": {"affiliation": "eduperson_scoped_affiliation"}}  # fmt: skip
    monkeypatch.setenv("FABBRICA_OIDC_PROVIDERS", json.dumps([item]))
    config = Settings().oidc_providers[0].config()
    assert config.scopes == ("openid", "email", "profile")
    assert config.claims.affiliation == "eduperson_scoped_affiliation"
    assert "s3cret" not in repr(config) and "s3cret" not in repr(Settings())
    monkeypatch.setenv("FABBRICA_OIDC_PROVIDERS", json.dumps([{**item, "name": "Bad Name"}]))
    with pytest.raises(ValidationError, match="name"):
        Settings()
