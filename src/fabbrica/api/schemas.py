"""Request and response bodies: Create / Public schemas per resource."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from fabbrica.api.params import MAX_ID
from fabbrica.catalog.summary import FactorySummary as FactorySummary  # one presenter
from fabbrica.core.identity import Role


class In(BaseModel):
    """A request body. Unknown fields are refused, and scalars are read as the OpenAPI
    schema states them: `true` is no integer and "1" no number, while 2.0 is the integer 2
    (as JSON Schema reads it). Enums and datetimes, which arrive as strings, opt out of
    strictness field by field (`Field(strict=False)`, or `Timestamp`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ints = _integer_fields(cls)
        return {
            k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v
            for k, v in data.items()
        }


def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    found = set()
    for name, info in model.model_fields.items():
        kinds = set(get_args(info.annotation) or (info.annotation,)) - {type(None)}
        if kinds == {int}:
            found.add(name)
    return frozenset(found)


def _text(value: Any) -> Any:
    if isinstance(value, int | float):  # lax datetimes read numbers as Unix times
        raise ValueError("a date-time is written as ISO 8601 text, e.g. 2027-01-31T00:00:00Z")
    return value


# A date-time in a request body: ISO 8601 text, as its schema (format: date-time) says.
Timestamp = Annotated[dt.datetime, Field(strict=False), BeforeValidator(_text)]
AwareTimestamp = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_text)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Health(BaseModel):
    status: str
    version: str
    database: str
    control_loop: str


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# --- catalog -----------------------------------------------------------------------------


class BillingPublic(_Out):
    rule: str
    factor: float
    cpus_per_unit: int | None = None
    memory_gb_per_unit: int | None = None


class PartitionPublic(_Out):
    id: str
    gpu_model: str
    gpu_name: str
    gpus_per_node: int
    nodes: int
    gpus: int
    cpus_per_node: int
    memory_per_node_gb: int
    billing: BillingPublic
    uncertain: list[str]


class SystemPublic(_Out):
    id: str
    name: str
    status: str
    available_from: str | None
    gpus: int
    partitions: list[PartitionPublic]
    uncertain: list[str]


class FactoryDetail(_Out):
    id: str
    name: str
    host: str | None
    city: str | None
    country: str
    partners: list[str]
    wave: int | None
    selected: dt.date | None
    focus_areas: list[str]
    emulated: bool
    gpus: int
    gpus_uncertain: bool
    systems: list[SystemPublic]
    uncertain: list[str]


class SectorPublic(BaseModel):
    id: str
    name: str


class AccessModePublic(_Out):
    id: str
    name: str
    code: str
    description: str
    organisation_types: list[str]
    min_gpu_hours: float | None
    max_gpu_hours: float | None
    duration_months: list[int]
    intake: str
    cutoffs_per_year: int | None
    review: str
    decision: str
    min_reviews: int
    min_average_score: float | None
    decision_target_working_days: int | None
    requires: list[str]
    legacy: bool
    uncertain: list[str]


# --- identity ----------------------------------------------------------------------------


FactoryList = list[Annotated[str, Field(min_length=1, max_length=64)]]


class UserCreate(In):
    email: str = Field(min_length=3, max_length=254)
    name: str = Field(min_length=1, max_length=200)
    role: Role = Field(default=Role.USER, strict=False)
    factories: FactoryList = Field(
        default_factory=list,
        max_length=100,
        description="the ids of the factories an operator operates (role operator only)",
    )


class UserFactories(In):
    factories: FactoryList = Field(
        max_length=100, description="the ids of the factories the operator operates (all of them)"
    )


class UserPublic(_Out):
    id: int
    email: str
    name: str
    role: Role
    active: bool
    created_at: dt.datetime
    factories: list[str] = Field(
        default_factory=list, description="factories operated ([] unless role operator)"
    )


class UserStatusChange(BaseModel):
    """Why a user is suspended or let back in (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class IdentityPublic(_Out):
    """An account at an OpenID Provider linked to a user (docs/identity.md)."""

    id: int
    user_id: int
    provider: str
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    affiliation: str | None
    assurance: str | None
    acr: str | None
    amr: str | None
    created_at: dt.datetime
    last_sign_in_at: dt.datetime


class ProviderPublic(_Out):
    """An OpenID Provider `fabbrica login` can sign in with (the device grant)."""

    name: str
    display_name: str
    issuer: str
    cli_client_id: str
    scopes: list[str]
    mfa_acr: list[str] = Field(description="the `acr` values to ask for with `login --mfa`")


class DeviceSignIn(In):
    provider: str = Field(min_length=1, max_length=40, description="the provider's name")
    id_token: str = Field(
        min_length=1, max_length=16384, description="the ID token the device grant gave the CLI"
    )
    access_token: str = Field(
        min_length=1, max_length=16384, description="its access token (to read userinfo)"
    )


class UserCreated(UserPublic):
    token: str = Field(description="the user's first API token; shown only in this answer")


class TokenCreate(In):
    name: str = Field(default="cli", min_length=1, max_length=100)
    user_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="admin only: a token for someone else"
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenPublic(_Out):
    id: int
    user_id: int
    name: str
    hint: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret; shown only in this answer, stored as a hash")
