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
    array_id: int | None = Field(
        default=None, description="a task of a job array: the array's id (its first task's)"
    )
    array_index: int | None = Field(default=None, description="the task's FABBRICA_ARRAY_INDEX")
    run: int = Field(
        default=1, description="the job's run: more than 1 once it was lost or resumed"
    )


MAX_BATCH = 1000  # jobs in one batch submission


class JobBatchCreate(BaseModel):
    """Several jobs in one request (specs without a workdir), accepted all or none."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH)


class ArrayCancelled(BaseModel):
    array_id: int
    cancelled: int = Field(description="queued tasks cancelled at once")
    stopping: int = Field(description="dispatched or running tasks asked to stop")


class UsageRow(BaseModel):
    key: str
    jobs: int
    gpu_hours: float
