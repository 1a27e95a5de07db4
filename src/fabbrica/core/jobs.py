"""Job states and the rules that map what a backend reports onto them. Pure."""

from __future__ import annotations

from enum import StrEnum

from fabbrica.core.executor import RunState


class JobState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self in FINISHED

    @property
    def active(self) -> bool:
        return self in (JobState.DISPATCHED, JobState.RUNNING)


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})

FROM_RUN = {
    RunState.SUCCEEDED: JobState.SUCCEEDED,
    RunState.FAILED: JobState.FAILED,
    RunState.CANCELLED: JobState.CANCELLED,
    RunState.TIMED_OUT: JobState.TIMED_OUT,
    RunState.RUNNING: JobState.RUNNING,
    RunState.PENDING: JobState.DISPATCHED,
}


def run_tag(job_id: int) -> str:
    """The id a backend knows a job by: it tags the run, so a restart can find it."""
    return f"fab-{job_id}"


def job_id_of(tag: str) -> int | None:
    """The job id in a run tag (`fab-<id>`), or None when `tag` is not one."""
    digits = tag.removeprefix("fab-")
    if digits == tag or not digits.isdigit() or len(digits) > 10:
        return None
    return int(digits)


def job_command(setup: str | None, run: str) -> str:
    """setup, then run if setup succeeded; each may span several lines."""
    if not setup:
        return run
    return f"{{\n{setup}\n}} && {{\n{run}\n}}"
