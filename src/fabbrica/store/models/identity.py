"""Users and their API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.base import Base
from fabbrica.store.types import utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    # The subject id of an external identity provider (OIDC: MyAccessID, Keycloak); null
    # for users who only hold API tokens.
    external_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    # Site agents (role agent) act for one factory only.
    factory_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # Not stored: whether this request was authenticated with multi-factor (a portal
    # session or API token that a multi-factor sign-in made); set by whoever authenticated.
    signed_in_with_mfa = False
    # Not stored: the factories whose catalog entry requires multi-factor authentication
    # while this request's sign-in was not multi-factor (`services.identity.apply_mfa_policy`,
    # called where requests are authenticated): no operator action there, no job placed there.
    lacks_mfa_for: frozenset[str] = frozenset()

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")
    operated: Mapped[list[OperatorFactory]] = relationship(
        cascade="all, delete-orphan", order_by="OperatorFactory.factory_id"
    )

    @property
    def factories(self) -> list[str]:
        """The ids of the factories this operator operates ([] for other roles)."""
        if self.role != "operator":
            return []
        return [row.factory_id for row in self.operated]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    mfa: Mapped[bool] = mapped_column(default=False)  # made by a multi-factor sign-in

    user: Mapped[User] = relationship(back_populates="tokens")


class OperatorFactory(Base):
    """A factory an operator operates: operators act on their factories' calls, proposals,
    allocations and agents only (federation admins on all)."""

    __tablename__ = "operator_factories"
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "factory_id", name="pk_operator_factories"),
        Index("ix_operator_factories_factory_id", "factory_id"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    factory_id: Mapped[str] = mapped_column(String(64))
