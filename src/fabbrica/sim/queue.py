"""One scheduler of a replay: its waiting jobs, its partitions, and the core it runs on."""

from __future__ import annotations

import math
from itertools import islice

from fabbrica.sched import Allocation, Job, Policy, Scheduler
from fabbrica.sim.partition import _Part

# Jobs each pass looks at, in priority order, as Slurm's backfill tests at most
# bf_max_job_test jobs per cycle (500 by default); 0: the whole queue.
QUEUE_DEPTH = 500
PROJECT = "trace"


class _Queue:
    """One scheduler: its waiting jobs and its partitions."""

    __slots__ = (
        "allocations",
        "by_factory",
        "core",
        "depth",
        "dirty",
        "in_order",
        "last",
        "parts",
        "policy",
        "position",
        "queued",
        "sizes",
        "strict",
        "waiting",
        "window",
    )

    def __init__(self, parts: list[_Part], policy: Policy) -> None:
        self.parts = parts
        self.policy = policy
        self.waiting: dict[int, Job] = {}
        self.queued = 0  # GPUs of the waiting jobs
        self.sizes: dict[int, int] = {}  # GPUs -> waiting jobs of that size
        self.dirty = False
        # strict FIFO on one partition: a pass starts a prefix of the queue and stops at
        # the first job that does not fit, so it needs to see no further than that job
        # while the queue is in submission order (a job queued again is not)
        self.strict = not policy.backfill and len(parts) == 1
        self.in_order = True
        self.last = -math.inf  # the latest submission queued
        self.allocations = tuple(
            Allocation(i, PROJECT, p.factory, math.inf) for i, p in enumerate(parts)
        )
        self.by_factory = {p.factory: p for p in parts}
        self.position = 0  # in the run's list of queues: passes run in that order
        self.depth = QUEUE_DEPTH  # jobs a pass looks at (0: all)
        # the jobs the last pass looked at, while they are the same (not strict FIFO): the
        # same tuple again, which the core ranks once
        self.window: tuple[Job, ...] | None = None
        for slot, part in enumerate(parts):
            part.slot = slot
        # the core's state kept between passes (`Scheduler`); None: a snapshot per pass
        # (outages change partitions' sizes, which a kept state does not follow)
        self.core: Scheduler | None = None

    def keep_state(self) -> None:
        """Run the passes on a `Scheduler` from now on (before any job started)."""
        snapshots = [p.snapshot() for p in self.parts]
        # the engine reads only the assignments: no Decision.order
        self.core = Scheduler(snapshots, self.allocations, self.policy, order=False)
        for part in self.parts:
            part.keep_runs = False  # no snapshot is taken again

    def could_start(self, gpus: int) -> bool:
        for p in self.parts:  # noqa: SIM110 (a loop: no generator for every arrival)
            if p.free - p.down >= gpus:  # `available` (gpus is at least 1)
                return True
        return False

    def add(self, index: int, job: Job) -> None:
        self.waiting[index] = job
        if not self.depth or len(self.waiting) <= self.depth:
            self.window = None  # a pass sees it
        self.queued += job.gpus
        self.sizes[job.gpus] = self.sizes.get(job.gpus, 0) + 1
        if job.submitted_at < self.last:
            self.in_order = False
        self.last = max(self.last, job.submitted_at)

    def idle(self) -> bool:
        """Whether a pass would provably start nothing: no waiting job fits in any
        partition's free GPUs, or (strict FIFO in submission order) the first does not."""
        parts = self.parts
        if len(parts) == 1:
            most = parts[0].free - parts[0].down  # `available`, inlined
        else:
            most = max([p.free - p.down for p in parts])
        most = max(most, 0)
        if self.strict and self.in_order:
            return next(iter(self.waiting.values())).gpus > most
        return min(self.sizes) > most

    def head(self, depth: int) -> tuple[Job, ...]:
        """The jobs a pass looks at: the first `depth` (0: all); under strict FIFO in
        submission order, only up to the first that cannot fit in the free GPUs (and
        those submitted at the same instant, which the core may rank before it)."""
        waiting = self.waiting.values()
        if not (self.strict and self.in_order):
            if self.window is None:
                self.window = tuple(islice(waiting, depth) if depth else waiting)
            return self.window
        room = self.parts[0].available
        seen: list[Job] = []
        blocked: float | None = None
        for job in waiting:
            if (depth and len(seen) == depth) or (
                blocked is not None and job.submitted_at != blocked
            ):
                break
            seen.append(job)
            room -= job.gpus
            if room < 0 and blocked is None:
                blocked = job.submitted_at
        return tuple(seen)

    def load(self) -> float:
        """GPUs running and queued over the GPUs (the naive router's measure)."""
        total = sum(p.total for p in self.parts)
        return (total - sum(p.free for p in self.parts) + self.queued) / total
