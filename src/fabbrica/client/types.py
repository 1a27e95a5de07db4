"""What the API answers, as TypedDicts: plain dicts at run time (print them, dump them as
JSON, make a DataFrame of a list), typed for mypy and editors. Timestamps are ISO 8601
strings in UTC. tests/unit/test_sdk.py checks every key against the API's schemas."""

from __future__ import annotations

from typing import Any, TypedDict


class Health(TypedDict):
    status: str
    version: str
    database: str
    control_loop: str


class Factory(TypedDict):
    """A factory of the catalog, summarised (`Client.factories`)."""

    id: str
    name: str
    host: str | None
    city: str | None
    country: str
    wave: int | None
    selected: str | None
    emulated: bool
    systems: int
    gpus: int
    gpus_uncertain: bool


class FactoryDetail(TypedDict):
    """One factory with its systems and their partitions (`Client.factory`)."""

    id: str
    name: str
    host: str | None
    city: str | None
    country: str
    partners: list[str]
    wave: int | None
    selected: str | None
    focus_areas: list[str]
    emulated: bool
    gpus: int
    gpus_uncertain: bool
    systems: list[dict[str, Any]]
    uncertain: list[str]


class Sector(TypedDict):
    id: str
    name: str


class _UserFields(TypedDict):
    id: int
    email: str
    name: str
    role: str
    active: bool
    created_at: str


class User(_UserFields):
    """A user; `factories`: the factories an operator operates ([] for other roles)."""

    factories: list[str]


class UserCreated(User):
    """A new user with their first API token, shown only in this answer."""

    token: str


class Token(TypedDict):
    """An API token without its secret; `hint` is how it starts."""

    id: int
    user_id: int
    name: str
    hint: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class TokenCreated(Token):
    token: str


class Member(TypedDict):
    user_id: int
    name: str
    email: str
    role: str


class Organisation(TypedDict):
    id: int
    name: str
    country: str
    type: str
    sector: str | None
    created_at: str


class OrganisationDetail(Organisation):
    members: list[Member]


class Project(TypedDict):
    id: str
    title: str
    org_id: int
    organisation: str
    pi_user_id: int
    mode: str
    created_at: str
    members: list[Member]


class Invitation(TypedDict):
    id: int
    project: str
    email: str
    expires_at: str
    token: str


class Call(TypedDict):
    id: str
    mode: str
    factory: str
    state: str
    decision: str
    offered_gpu_hours: float | None
    committed_gpu_hours: float
    min_reviews: int
    min_average_score: float | None
    closed_reason: str | None
    reviewers: list[int]


class Allocation(TypedDict):
    id: int
    project: str
    factory: str
    call: str
    gpu_model: str | None
    gpu_hours: float
    used_gpu_hours: float
    reserved_gpu_hours: float
    remaining_gpu_hours: float
    valid_from: str
    valid_until: str
    state: str
    final_report_due: str
    final_report_submitted: bool


class Notice(TypedDict):
    """A budget alert: `threshold` is used_75, used_90, used_100, days_14 or days_3."""

    id: int
    allocation: int
    project: str
    factory: str
    threshold: str
    message: str
    used_gpu_hours: float
    gpu_hours: float
    valid_until: str
    created_at: str


class Proposal(TypedDict):
    """A proposal; `reviews` carry `reviewer_id`, `state` and `conflict_reason` for staff."""

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
    submitted_at: str | None
    decided_at: str | None
    decided_gpu_hours: float | None
    decision_reason: str | None
    auto_decided: bool
    reviews: list[dict[str, Any]]
    allocation: Allocation | None


class AuditEntry(TypedDict):
    at: str
    actor_id: int | None
    action: str
    detail: str
    reason: str | None


class Notebook(TypedDict):
    """A notebook (POST/GET /notebooks): its job, its path on the server, its state."""

    job: int
    url: str
    state: str
    project: str
    factory: str | None
    gpus: int
    time_limit_s: int
    submitted_at: str
    started_at: str | None
    ended_at: str | None
    gpu_hours: float | None
    reason: str | None


class Job(TypedDict):
    """A job: `state` is queued, starting, running, succeeded, failed, cancelled or
    timed_out; `reason` says why it waits or how it ended; `gpu_hours` is charged once it
    ended."""

    id: int
    name: str
    project: str
    state: str
    reason: str | None
    factory: str | None
    partition: str | None
    gpus: int
    nodes: int
    gpu_model: str | None
    time_limit_s: int
    gpu_hours: float | None
    reserved_gpu_hours: float
    submitted_at: str
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    cancel_requested: bool
    array_id: int | None
    array_index: int | None
    run: int


class ArrayCancelled(TypedDict):
    """What cancelling an array did: queued tasks `cancelled`, running ones `stopping`."""

    array_id: int
    cancelled: int
    stopping: int


class UsageRow(TypedDict):
    key: str
    jobs: int
    gpu_hours: float


class Capacity(TypedDict):
    partition: str
    gpu_model: str
    total_gpus: int
    free_gpus: int
    queued: int


class Agent(TypedDict):
    factory: str
    backend: str | None
    last_seen_at: str | None
    capabilities: list[str]
    capacity: list[Capacity]


class AgentToken(TypedDict):
    factory: str
    user_id: int
    token: str


class SiteUsername(TypedDict):
    factory: str
    email: str
    username: str
