"""The portal's sign-in links and browser sessions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.base import Base
from fabbrica.store.models.identity import User
from fabbrica.store.types import utcnow


class SignInLink(Base):
    """A one-time sign-in link sent by email: only its hash is kept. `user_id` is null
    when the address has no account yet (the first sign-in makes one)."""

    __tablename__ = "sign_in_links"
    __table_args__ = (Index("ix_sign_in_links_email", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class PortalSession(Base):
    """A browser's session: the cookie holds a secret whose hash is kept here, with the
    session's CSRF token; it ends at `expires_at`, on sign-out or when revoked."""

    __tablename__ = "portal_sessions"
    __table_args__ = (Index("ix_portal_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    # how the user signed in through an OpenID Provider (null: the email link)
    acr: Mapped[str | None] = mapped_column(String(200))
    amr: Mapped[str | None] = mapped_column(String(200))
    mfa: Mapped[bool] = mapped_column(default=False)
    provider: Mapped[str | None] = mapped_column(String(40))  # the OpenID Provider's name

    user: Mapped[User] = relationship()
