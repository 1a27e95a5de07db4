"""Federated sign-in (OpenID Connect): what a provider is and what its claims say.

Pure: the relying party in `services.oidc` fetches and validates; here a validated set of
claims becomes the few facts Fabbrica keeps (`Asserted`), through the provider's claim map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MFA_ACR = "https://refeds.org/profile/mfa"  # REFEDS MFA profile, as MyAccessID sends it
MFA_AMR = frozenset({"mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "pop"})


@dataclass(frozen=True)
class ClaimMap:
    """Which claim holds each fact (a provider may name them differently)."""

    email: str = "email"
    email_verified: str = "email_verified"
    name: str = "name"
    affiliation: str = "voperson_external_affiliation"
    assurance: str = "eduperson_assurance"


@dataclass(frozen=True)
class ProviderConfig:
    """One OpenID Provider this Fabbrica trusts (from the settings)."""

    name: str  # the slug in URLs: /sign-in/with/<name>
    display_name: str  # "Sign in with <display_name>"
    issuer: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    claims: ClaimMap = field(default_factory=ClaimMap)
    mfa_acr: tuple[str, ...] = (MFA_ACR,)  # `acr` values that count as multi-factor
    cli_client_id: str | None = None  # a public client with the device grant (fabbrica login)
    api_audience: str | None = None  # set: the API accepts this provider's JWT access tokens


@dataclass(frozen=True)
class Asserted:
    """What a provider asserts about a person after a validated sign-in."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    affiliation: str | None
    assurance: str | None
    acr: str | None
    amr: tuple[str, ...]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        joined = " ".join(str(item) for item in value if item is not None)
        return joined or None
    text = str(value).strip()
    return text or None


def _verified(value: Any) -> bool:
    """Only a real `true` counts (some providers send the string "true")."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def assert_claims(config: ProviderConfig, claims: Mapping[str, Any]) -> Asserted:
    """Map validated claims (ID token merged with userinfo) through the claim map."""
    mapping = config.claims
    amr = claims.get("amr")
    return Asserted(
        issuer=config.issuer,
        subject=str(claims["sub"]),
        email=_text(claims.get(mapping.email)),
        email_verified=_verified(claims.get(mapping.email_verified)),
        name=_text(claims.get(mapping.name)),
        affiliation=_text(claims.get(mapping.affiliation)),
        assurance=_text(claims.get(mapping.assurance)),
        acr=_text(claims.get("acr")),
        amr=tuple(str(item) for item in amr) if isinstance(amr, list) else (),
    )


def is_multi_factor(acr: str | None, amr: tuple[str, ...], mfa_acr: tuple[str, ...]) -> bool:
    """Whether a sign-in was multi-factor: an `acr` the provider's settings count as MFA,
    or an `amr` naming a second factor."""
    return (acr is not None and acr in mfa_acr) or bool(MFA_AMR.intersection(amr))
