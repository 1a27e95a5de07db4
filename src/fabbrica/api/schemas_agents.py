"""Bodies of the site-agent API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from fabbrica.api.params import RUN_TAG_IN
from fabbrica.api.schemas import In, Timestamp
from fabbrica.core.executor import RunState
from fabbrica.services.agents import USERNAME

NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class AgentTokenPublic(BaseModel):
    factory: str
    user_id: int
    token: str = Field(description="shown once: the agent's API token")


class SiteUsernameSet(In):
    email: str = Field(max_length=254)
    username: str = Field(max_length=32, pattern=USERNAME.pattern)


class SiteUsernamePublic(BaseModel):
    factory: str
    email: str
    username: str


class CapacityIn(In):
    partition: str = Field(pattern=NAME)
    gpu_model: str = Field(pattern=NAME)
    total_gpus: int = Field(ge=0, le=10_000_000)
    free_gpus: int = Field(ge=0, le=10_000_000)
    queued: int = Field(default=0, ge=0, le=10_000_000)


class RunIn(In):
    run_tag: str = Field(pattern=RUN_TAG_IN, description="the run tag, fab-<job id>")
    state: RunState = Field(strict=False)
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    exit_code: int | None = Field(default=None, ge=-1000, le=1000)
    reason: str | None = Field(default=None, max_length=2000)
    site_job_id: str | None = Field(default=None, pattern=NAME)
    gpus: int | None = Field(default=None, ge=0, le=10_000_000)
    elapsed_s: float | None = Field(default=None, ge=0, le=10 * 365 * 86400)


class SyncIn(In):
    backend: str = Field(pattern=NAME)
    capabilities: list[str] = Field(default_factory=list, max_length=16)
    capacity: list[CapacityIn] = Field(default_factory=list, max_length=256)
    runs: list[RunIn] = Field(default_factory=list, max_length=100_000)
    wait_s: float = Field(
        default=0,
        ge=0,
        le=3600,
        description="hold the answer up to this many seconds until there is work for the "
        "agent (the server caps it: see `wait_s` in the answer)",
    )


class DataMountOut(BaseModel):
    name: str
    files: list[tuple[str, str]]
    version: str = Field(default="", description="the data set version, as `scans@2`")
    size: int = Field(default=0, description="bytes, all files")


class CheckpointOut(BaseModel):
    dir: str
    every_s: int
    grace_s: int
    archive: str | None = Field(
        default=None,
        description="where the agent downloads the folder an earlier run sent (a tar), if any",
    )
    sha256: str | None = Field(default=None, description="the archive's SHA-256")


class LaunchOut(BaseModel):
    run_tag: str
    run: int = Field(default=1, description="the job's run (a resumed job has had earlier ones)")
    checkpoint: CheckpointOut | None = None
    partition: str
    gpus: int
    nodes: int
    time_limit_s: int
    command: str
    env: dict[str, str]
    gpu_model: str | None
    workdir_archive: str | None = Field(description="API path of the workdir archive, if any")
    account: str | None
    user: str | None = Field(description="the site username to run as (null: none mapped)")
    datasets: list[DataMountOut] = Field(
        default_factory=list,
        description="data sets to stage first, at $FABBRICA_DATA/<name>: each file's path "
        "and the API path of its bytes (ending in its sha256)",
    )


class SyncOut(BaseModel):
    factory: str
    lease_seconds: float
    launch: list[LaunchOut]
    cancel: list[str]
    wait_s: float = Field(
        default=0, description="the longest this server holds a sync (0: it answers at once)"
    )


class AccountOut(BaseModel):
    account: str
    project: str
    state: str
    gpu_minutes: int
    users: list[str]


class AgentPublic(BaseModel):
    factory: str
    backend: str | None
    last_seen_at: dt.datetime | None
    capabilities: list[str]
    capacity: list[CapacityIn]
