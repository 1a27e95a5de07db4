"""Request and response bodies of the access lifecycle."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fabbrica.api.params import MAX_ID
from fabbrica.api.schemas import AwareTimestamp, In
from fabbrica.catalog.model import Decision
from fabbrica.core.access import MAX_ABSTRACT_CHARS, MAX_GPU_HOURS, CallState

GpuHours = float


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class OrganisationCreate(In):
    name: str = Field(min_length=1, max_length=200)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166 alpha-2")
    type: str = Field(min_length=1, max_length=20)
    sector: str | None = Field(default=None, max_length=64)


class OrganisationPublic(_Out):
    id: int
    name: str
    country: str
    type: str
    sector: str | None
    created_at: dt.datetime


class OrganisationMemberAdd(In):
    email: str = Field(min_length=3, max_length=254)
    admin: bool = False


class OrganisationMemberPublic(BaseModel):
    user_id: int
    name: str
    email: str
    role: str


class OrganisationDetail(OrganisationPublic):
    members: list[OrganisationMemberPublic]


class ProjectCreate(In):
    title: str = Field(min_length=1, max_length=300)
    org_id: int = Field(ge=1, le=MAX_ID)
    mode: str | None = Field(default=None, max_length=64, description="default: playground")


class MemberPublic(BaseModel):
    user_id: int
    name: str
    email: str
    role: str


class ProjectPublic(BaseModel):
    id: str
    title: str
    org_id: int
    organisation: str
    pi_user_id: int
    mode: str
    created_at: dt.datetime
    members: list[MemberPublic]


class InvitationCreate(In):
    email: str = Field(min_length=3, max_length=254)


class InvitationPublic(BaseModel):
    id: int
    project: str
    email: str
    expires_at: dt.datetime
    token: str = Field(description="sent by email; shown once here too")


class InvitationAccept(In):
    token: str = Field(min_length=10, max_length=200)


class UserRef(In):
    user_id: int = Field(ge=1, le=MAX_ID)


class CallPublic(_Out):
    id: str
    mode: str
    factory: str = Field(validation_alias="factory_id")
    state: str
    decision: str
    offered_gpu_hours: float | None
    committed_gpu_hours: float = 0.0
    min_reviews: int
    min_average_score: float | None
    closed_reason: str | None
    reviewers: list[int] = []


class CallUpdate(In):
    state: CallState | None = Field(default=None, strict=False)
    decision: Decision | None = Field(default=None, strict=False)
    offered_gpu_hours: float | None = Field(default=None, ge=0, le=MAX_GPU_HOURS)
    min_reviews: int | None = Field(default=None, ge=0, le=20)
    min_average_score: float | None = Field(default=None, ge=1, le=5)
    reason: str | None = Field(default=None, max_length=500)


class ProposalCreate(In):
    project_id: str = Field(min_length=1, max_length=40)
    call_id: str = Field(min_length=1, max_length=140)
    gpu_hours: float = Field(gt=0, le=MAX_GPU_HOURS, allow_inf_nan=False)
    months: int = Field(ge=1, le=60)
    gpu_model: str | None = Field(default=None, max_length=64)
    abstract: str = Field(default="", max_length=MAX_ABSTRACT_CHARS)
    declare_civilian_ai_act: bool = False
    submit: bool = True


class ReviewPublic(BaseModel):
    """What the applicant sees: no reviewer identity."""

    score: int | None
    comment: str | None
    submitted_at: dt.datetime | None


class ReviewerReview(ReviewPublic):
    """What staff and the reviewer see."""

    reviewer_id: int
    state: str
    conflict_reason: str | None


class AllocationPublic(BaseModel):
    id: int
    project: str
    factory: str
    call: str
    gpu_model: str | None
    gpu_hours: float
    used_gpu_hours: float
    reserved_gpu_hours: float
    remaining_gpu_hours: float
    valid_from: dt.datetime
    valid_until: dt.datetime
    state: str
    final_report_due: dt.datetime
    final_report_submitted: bool


class NoticePublic(BaseModel):
    """A budget alert of one of your projects' allocations (also sent by email)."""

    id: int
    allocation: int
    project: str
    factory: str
    threshold: str = Field(description="used_75, used_90, used_100, days_14 or days_3")
    message: str
    used_gpu_hours: float = Field(description="when the alert was written")
    gpu_hours: float = Field(description="granted, when the alert was written")
    valid_until: dt.datetime
    created_at: dt.datetime


class ProposalPublic(BaseModel):
    id: int
    project: str
    call: str
    mode: str
    factory: str
    state: str
    gpu_hours: float
    months: int
    gpu_model: str | None
    abstract: str
    declaration: str | None
    submitted_at: dt.datetime | None
    decided_at: dt.datetime | None
    decided_gpu_hours: float | None
    decision_reason: str | None
    auto_decided: bool
    reviews: list[ReviewPublic] | list[ReviewerReview]
    allocation: AllocationPublic | None


class ReviewCreate(In):
    score: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = Field(default=None, max_length=20_000)
    conflict: str | None = Field(
        default=None, max_length=1000, description="declare a conflict of interest instead"
    )


class ReviewerAssign(In):
    reviewer_id: int = Field(ge=1, le=MAX_ID)


class DecisionCreate(In):
    decision: Literal["accept", "reject"]
    gpu_hours: float | None = Field(default=None, gt=0, le=MAX_GPU_HOURS, allow_inf_nan=False)
    reason: str | None = Field(default=None, max_length=5000)


class AllocationChange(In):
    action: Literal["extend", "top_up", "suspend", "resume", "terminate"]
    reason: str = Field(min_length=1, max_length=2000)
    months: int | None = Field(default=None, ge=1, le=60)
    until: AwareTimestamp | None = None
    gpu_hours: float | None = Field(default=None, gt=0, le=MAX_GPU_HOURS, allow_inf_nan=False)


class FinalReport(In):
    text: str = Field(min_length=20, max_length=200_000)


class AuditPublic(_Out):
    at: dt.datetime
    actor_id: int | None
    action: str
    detail: str
    reason: str | None
