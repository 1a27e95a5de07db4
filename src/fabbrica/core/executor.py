"""The executor contract (submit, poll, cancel, capacity, usage, capabilities) and the
types that cross it. The core owns it; backends implement it, services drive it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


class Capability(StrEnum):
    """What a backend can do beyond one single-node job, as `Executor.capabilities()`
    declares it (an agent reports its backend's). Placement respects the absence: a
    multi-node job is placed only where MULTI_NODE is declared."""

    MULTI_NODE = "multi_node"
    CONTAINERS = "containers"
    PREEMPTION = "preemption"


class RunState(StrEnum):
    """A run's state as the backend sees it (the job service maps it onto job states)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"  # the backend has no record of it (never started, or purged)
    LOST = "lost"  # its site stopped answering for longer than the run's lease

    @property
    def finished(self) -> bool:
        return self in {
            RunState.SUCCEEDED,
            RunState.FAILED,
            RunState.CANCELLED,
            RunState.TIMED_OUT,
        }


@dataclass(frozen=True, slots=True)
class DataMount:
    """A data set version a job reads at `$FABBRICA_DATA/<name>`: its files, each as
    (its path in the data set, where its bytes are on the executor's machine); for a
    site agent staging it, the version it is (`scans@2`) and its size, for the progress it
    reports."""

    name: str
    files: tuple[tuple[str, str], ...]
    version: str = ""
    size: int = 0  # bytes, all files


@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    """A job that checkpoints: the folder (relative to its own) whose contents the executor
    keeps across its runs, how often it should save, and how long before its time limit it
    gets SIGUSR1 to save (Slurm: `--signal=B:USR1@<grace_s>`). `archive`: the folder's last
    copy the server holds (a tar its earlier run sent, possibly from another site), unpacked
    into the folder before the run starts: from the API, the path a site agent downloads
    (checked against `sha256`); in a request to an executor, the downloaded file."""

    dir: str
    every_s: int
    grace_s: int
    archive: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """What to run. `run_tag` (`fab-<job id>`) tags the run so that a restarted loop can
    find it again."""

    run_tag: str
    partition: str
    gpus: int
    nodes: int
    time_limit: dt.timedelta
    command: str
    env: Mapping[str, str] = field(default_factory=dict)
    gpu_model: str | None = None
    workdir_archive: str | None = None  # a .tar.gz of the job's workdir, unpacked to run in
    account: str | None = None  # the site account to charge (Slurm: the project's account)
    user: str | None = None  # the site username to run as (None: the executor's own user)
    owner: int | None = None  # the Fabbrica user whose job it is (isolating executors run
    # each owner's jobs as a system user of their own)
    datasets: tuple[DataMount, ...] = ()  # read-only at $FABBRICA_DATA/<name>
    data_dir: str | None = None  # where a site agent staged `datasets` ($FABBRICA_DATA)
    run: int = 1  # the job's run: a later one replaces an earlier one, keeping checkpoints
    checkpoint: CheckpointRequest | None = None


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run's state as its backend reports it, known by its run tag."""

    run_tag: str
    state: RunState
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    site_job_id: str | None = None  # the site's id of the run (Slurm job id)
    gpus: int | None = None  # GPUs the site allocated, when it says
    elapsed_s: float | None = None  # run time the site recorded (Slurm: sacct Elapsed)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Free and total GPUs per partition, as the backend sees them now."""

    partition: str
    gpu_model: str
    total_gpus: int
    free_gpus: int
    queued: int = 0  # runs waiting in the site's own queue


@dataclass(frozen=True, slots=True)
class UsageSample:
    run_tag: str
    gpus: int
    elapsed: dt.timedelta


@runtime_checkable
class Executor(Protocol):
    """A place that runs jobs: this machine, a Slurm cluster, an in-memory fake."""

    name: str

    def capabilities(self) -> frozenset[Capability]: ...

    def capacity(self) -> list[Capacity]: ...

    def submit(self, request: LaunchRequest) -> RunStatus:
        """Start (or queue) the run; idempotent for a `run_tag` it already has."""
        ...

    def poll(self, run_tags: list[str]) -> list[RunStatus]:
        """The current status of each run (UNKNOWN for tags it does not know)."""
        ...

    def cancel(self, run_tag: str) -> RunStatus: ...

    def usage(self, run_tags: list[str]) -> list[UsageSample]: ...

    def adopt(self) -> list[RunStatus]:
        """Every run this backend holds that carries a Fabbrica run tag (for reconcile)."""
        ...


@runtime_checkable
class JobFiles(Protocol):
    """An executor that keeps each run's files on this machine, in a directory of its own:
    `log` (stdout and stderr), `work/` (the unpacked workdir, where outputs are written).
    The local and Slurm executors do; so does an agent link whose agent uploads the logs
    here. The agent sends logs, and the API serves logs and outputs, only of these."""

    def job_dir(self, run_tag: str) -> Path: ...


def job_files(executor: Executor | None) -> JobFiles | None:
    """The executor's job files, when it keeps them here (the one probe for them)."""
    return executor if isinstance(executor, JobFiles) else None
