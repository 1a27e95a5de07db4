"""Organisations, projects, calls, proposals, reviews, allocations, audit log, outbox."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.base import Base
from fabbrica.store.models.identity import User


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    type: Mapped[str] = mapped_column(String(20))
    sector: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime]


class OrganisationMember(Base):
    __tablename__ = "organisation_members"

    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # admin | member | invited_admin | invited_member


class Project(Base):
    __tablename__ = "projects"

    pk: Mapped[int] = mapped_column(primary_key=True)
    # FAB-AIF-2026PG11-0007; set right after the row gets its pk (the sequence part).
    id: Mapped[str | None] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    pi_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    mode: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]

    organisation: Mapped[Organisation] = relationship()
    pi: Mapped[User] = relationship()


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_pk: Mapped[int] = mapped_column(
        ForeignKey("projects.pk", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))  # pi | member
    added_at: Mapped[dt.datetime]

    user: Mapped[User] = relationship()


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    accepted_at: Mapped[dt.datetime | None]
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Call(Base):
    """An access mode offered at one factory, with the operator's settings."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(140), primary_key=True)  # it4lia-playground
    mode: Mapped[str] = mapped_column(String(64))
    factory_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))  # open | closed
    decision: Mapped[str] = mapped_column(String(10))  # automatic | manual
    offered_gpu_hours: Mapped[float | None] = mapped_column(Float)
    min_reviews: Mapped[int]
    min_average_score: Mapped[float | None] = mapped_column(Float)
    closed_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime]

    __table_args__ = (UniqueConstraint("factory_id", "mode"),)


class CallReviewer(Base):
    __tablename__ = "call_reviewers"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Proposal(Base):
    __tablename__ = "proposals"
    __table_args__ = (
        Index("ix_proposals_project_pk", "project_pk"),
        Index("ix_proposals_call_id", "call_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"))
    state: Mapped[str] = mapped_column(String(12))
    gpu_hours: Mapped[float] = mapped_column(Float)
    months: Mapped[int]
    gpu_model: Mapped[str | None] = mapped_column(String(64))
    abstract: Mapped[str] = mapped_column(Text)
    declaration: Mapped[str | None] = mapped_column(Text)
    declared_at: Mapped[dt.datetime | None]
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime]
    submitted_at: Mapped[dt.datetime | None]
    decided_at: Mapped[dt.datetime | None]
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_gpu_hours: Mapped[float | None] = mapped_column(Float)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    auto_decided: Mapped[bool] = mapped_column(default=False)

    project: Mapped[Project] = relationship()
    call: Mapped[Call] = relationship()


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("proposal_id", "reviewer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(12))  # assigned | submitted | conflict
    score: Mapped[int | None]
    comment: Mapped[str | None] = mapped_column(Text)
    conflict_reason: Mapped[str | None] = mapped_column(String(1000))
    assigned_at: Mapped[dt.datetime]
    submitted_at: Mapped[dt.datetime | None]


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint(
            "used_gpu_hours + reserved_gpu_hours <= granted_gpu_hours + 1e-6", name="within_grant"
        ),
        CheckConstraint("used_gpu_hours >= 0 AND reserved_gpu_hours >= 0", name="non_negative"),
        Index("ix_allocations_project_pk", "project_pk"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id"), unique=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"))
    factory_id: Mapped[str] = mapped_column(String(64))
    gpu_model: Mapped[str | None] = mapped_column(String(64))
    granted_gpu_hours: Mapped[float] = mapped_column(Float)
    used_gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    valid_from: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime]
    state: Mapped[str] = mapped_column(String(12))
    final_report_due: Mapped[dt.datetime]
    final_report: Mapped[str | None] = mapped_column(Text)
    final_report_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]

    project: Mapped[Project] = relationship()


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    entity: Mapped[str] = mapped_column(String(30))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    reason: Mapped[str | None] = mapped_column(Text)


class OutboxEmail(Base):
    """Email written in the same transaction as its cause; the control loop sends it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_sent_at", "sent_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
