"""Site agents: what each factory's agent last reported, and site usernames."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fabbrica.store.models.base import Base


class Agent(Base):
    """The agent of one factory: its last heartbeat and the capacity it reported."""

    __tablename__ = "agents"

    factory_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    backend: Mapped[str | None] = mapped_column(String(32))
    capabilities: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    capacity: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of partitions
    last_seen_at: Mapped[dt.datetime | None]


class SiteUsername(Base):
    """The username a Fabbrica user has at a factory (jobs run as it there)."""

    __tablename__ = "site_usernames"
    __table_args__ = (
        UniqueConstraint("factory_id", "user_id", name="uq_site_usernames_factory_user"),
        UniqueConstraint("factory_id", "username", name="uq_site_usernames_factory_username"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    factory_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(64))
