"""Settings, read from FABBRICA_* environment variables (docs/configuration.md lists them)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fabbrica.core.federated import MFA_ACR, ClaimMap, ProviderConfig


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fabbrica"


class ClaimMapSettings(BaseModel):
    """Which claim holds each fact (docs/identity.md)."""

    email: str = "email"
    email_verified: str = "email_verified"
    name: str = "name"
    affiliation: str = "voperson_external_affiliation"
    assurance: str = "eduperson_assurance"


class OidcProviderSettings(BaseModel):
    """One OpenID Provider (an item of FABBRICA_OIDC_PROVIDERS, a JSON list)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    display_name: str = Field(min_length=1, max_length=80)
    issuer: str = Field(max_length=500, pattern=r"^https?://[^\s]+$")
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: str = Field(default="", repr=False)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    claims: ClaimMapSettings = Field(default_factory=ClaimMapSettings)
    mfa_acr: list[str] = Field(default_factory=lambda: [MFA_ACR])
    cli_client_id: str | None = Field(default=None, min_length=1, max_length=255)
    api_audience: str | None = Field(default=None, min_length=1, max_length=255)

    def config(self) -> ProviderConfig:
        scopes = self.scopes if "openid" in self.scopes else ["openid", *self.scopes]
        return ProviderConfig(
            name=self.name,
            display_name=self.display_name,
            issuer=self.issuer,
            client_id=self.client_id,
            client_secret=self.client_secret,
            scopes=tuple(scopes),
            claims=ClaimMap(**self.claims.model_dump()),
            mfa_acr=tuple(self.mfa_acr),
            cli_client_id=self.cli_client_id,
            api_audience=self.api_audience,
        )


class Settings(BaseSettings):
    """Server-side settings. Each one is also documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="FABBRICA_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    catalog: Path | None = None
    bootstrap_token: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    loop_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    log_level: str = "info"
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    local_gpus: int = Field(default=2, ge=0, le=1024)
    notebook_idle: int = Field(default=3600, ge=10, le=14 * 86400)  # seconds; notebooks.md
    emulate_federation: bool = False
    local_user: str | None = Field(default=None, max_length=254)  # see services.single_user
    upload_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, le=10 * 1024**3)
    dataset_quota_bytes: int = Field(default=100 * 1024**3, ge=0, le=1024**6)  # per project
    archive_max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    archive_max_unpacked_bytes: int = Field(default=1024**3, ge=1024, le=1024**5)
    archive_max_ratio: float = Field(default=100.0, ge=1, le=1_000_000)
    agent_lease_seconds: float = Field(default=60.0, ge=5, le=86400)
    agent_wait_seconds: float = Field(default=20.0, ge=0, le=3600)  # a sync held, at most
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "fabbrica@localhost"
    metrics_token: str | None = Field(default=None, repr=False)  # /metrics: Bearer, when set
    metrics_cache_seconds: float = Field(default=5.0, ge=0, le=300)  # /metrics: reuse for
    public_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://[^\s]+$")
    checkpoint_keep_days: float = Field(default=0.0, ge=0, le=3650)  # after a job is over
    templates_dir: Path | None = None  # job templates added to the shipped ones
    oidc_providers: list[OidcProviderSettings] = Field(default_factory=list)  # docs/identity.md

    def resolved_database_url(self) -> str:
        """FABBRICA_DATABASE_URL, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'fabbrica.db'}"
