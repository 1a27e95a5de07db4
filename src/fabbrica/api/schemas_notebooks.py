"""Notebooks in the API: what starting one takes, and what a notebook shows."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from fabbrica.core.jobspec import MAX_GPUS, MAX_TIME_LIMIT_S
from fabbrica.core.notebooks import DEFAULT_HOURS


class NotebookCreate(BaseModel):
    project: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    factory: str | None = Field(default=None, max_length=64)
    gpus: int = Field(default=1, ge=1, le=MAX_GPUS)
    hours: float = Field(default=DEFAULT_HOURS, gt=0, le=MAX_TIME_LIMIT_S / 3600)
    datasets: list[str] = Field(default_factory=list, max_length=32)


class NotebookPublic(BaseModel):
    job: int = Field(description="the notebook's job id (`fabbrica jobs show`, its outputs)")
    url: str = Field(description="its address on this server: the proxy's path")
    state: str = Field(
        description="starting, ready, reconnecting (it runs at a site whose agent is away),"
        " or how its job ended"
    )
    ends_at: dt.datetime | None = Field(
        default=None,
        description="when a running notebook ends if nothing changes: the sooner of its"
        " time limit and its idle end (none while a client is connected)",
    )
    ends_because: str | None = Field(
        default=None, description="why it ends then: `time_limit` or `idle`"
    )
    project: str
    factory: str | None
    gpus: int
    time_limit_s: int
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    gpu_hours: float | None
    reason: str | None
