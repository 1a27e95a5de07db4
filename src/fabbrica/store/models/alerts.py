"""Budget alerts (an allocation passed 75, 90 or 100 % of its GPU-hours, or has 14 or 3 days
left) and the operators' daily digests: one row each, written in the transaction of the
emails it caused, so that a crash or a restart never sends one twice nor loses one."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Index, PrimaryKeyConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.access import Allocation
from fabbrica.store.models.base import Base


class BudgetAlert(Base):
    """One threshold an allocation passed; also the notice its project's members see."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("allocation_id", "threshold"),
        Index("ix_budget_alerts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id", ondelete="CASCADE"))
    threshold: Mapped[str] = mapped_column(
        String(12)
    )  # used_75 | used_90 | used_100 | days_14 | days_3
    message: Mapped[str] = mapped_column(String(300))
    used_gpu_hours: Mapped[float] = mapped_column(Float)
    granted_gpu_hours: Mapped[float] = mapped_column(Float)
    valid_until: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]

    allocation: Mapped[Allocation] = relationship()


class OperatorDigest(Base):
    """The daily digest of one operator for one day (UTC): at most one a day."""

    __tablename__ = "operator_digests"
    __table_args__ = (PrimaryKeyConstraint("user_id", "day", name="pk_operator_digests"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[str] = mapped_column(String(10))  # 2026-11-30
    allocations: Mapped[int]  # how many it listed (0: nothing to say, nothing sent)
    created_at: Mapped[dt.datetime]
