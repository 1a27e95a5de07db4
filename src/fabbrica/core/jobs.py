"""Job states and the rules that map what a backend reports onto them. Pure."""

from __future__ import annotations

import re
from enum import StrEnum

from fabbrica.core.executor import RunState

RUN_TAG_PREFIX = "fab-"
RUN_TAG_PATTERN = RUN_TAG_PREFIX + "[0-9]{1,10}"  # fab-<job id>; no anchors: embed it
_RUN_TAG = re.compile(RUN_TAG_PATTERN)


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
    return f"{RUN_TAG_PREFIX}{job_id}"


def job_id_of(tag: str) -> int | None:
    """The job id in a run tag (`fab-<id>`), or None when `tag` is not one."""
    if not _RUN_TAG.fullmatch(tag):
        return None
    return int(tag.removeprefix(RUN_TAG_PREFIX))


def job_command(setup: str | None, run: str) -> str:
    """setup, then run if setup succeeded; each may span several lines."""
    if not setup:
        return run
    return f"{{\n{setup}\n}} && {{\n{run}\n}}"
