"""Bodies of the jobs API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# What GET /usage groups by (services.usage.GROUPS; a test keeps the two equal).
UsageGroup = Literal["project", "factory", "org", "country", "sector", "mode"]


class JobCreate(BaseModel):
    """JSON form of a submission (the multipart form also takes a workdir archive)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | str = Field(description="the job spec, as an object or YAML text")
    project: str | None = Field(default=None, max_length=40)


class JobPublic(BaseModel):
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
    gpu_hours: float | None = Field(description="charged, once the job ended")
    reserved_gpu_hours: float
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    exit_code: int | None
    cancel_requested: bool


class UsageRow(BaseModel):
    key: str
    jobs: int
    gpu_hours: float
