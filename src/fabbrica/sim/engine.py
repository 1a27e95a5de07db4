"""The discrete-event engine: replays jobs through `fabbrica.sched.schedule`.

Events are arrivals (from the trace) and ends (start + real run time). At each instant the
engine releases what ended, queues what arrived, then runs one scheduling pass for every
queue that could start something: the production core decides, the engine applies its
assignments. Policies differ only in what a queue and its partitions are:

- site-fifo / site-backfill: one queue per factory, holding its home jobs, on that
  factory's GPUs alone (each site runs its own scheduler, as Slurm does today);
- federated: one queue, every factory a partition: Fabbrica's placement;
- pooled: one queue on one partition with all the GPUs.

Priority is the core's fair share plus age with no recorded usage, so jobs are ranked by
submission; time limits (what backfill plans with) are the run time rounded up. A pass
sees the first `queue_depth` waiting jobs of its queue, as Slurm's backfill tests at most
`bf_max_job_test` jobs per cycle.

A pass is skipped when it provably starts nothing: after an arrival whose job fits in no
partition's free GPUs (earlier jobs could not start before, and nothing was released).
Every run checks conservation: each job starts once and ends once, a partition never
holds more GPUs than it has, and every GPU is free again at the end.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from fabbrica.sim.federation import Federation
from fabbrica.sim.trace import TraceJob

POLICIES = ("site-fifo", "site-backfill", "federated", "pooled")
# Jobs each pass looks at, in priority order, as Slurm's backfill tests at most
# bf_max_job_test jobs per cycle (500 by default); 0: the whole queue.
QUEUE_DEPTH = 500
GPUS_PER_NODE = 8
PROJECT = "trace"


class SimulationError(RuntimeError):
    """A conservation check failed: a bug, never a property of the trace."""


@dataclass(frozen=True)
class Run:
    policy: str
    starts: tuple[float, ...]  # per job, in the order of the jobs given
    factories: tuple[str, ...]  # where each job ran
    capacity: int  # GPUs
    passes: int
    events: int
    wall_seconds: float


def time_limit(duration: float, factor: float) -> float:
    """The run time times `factor`, rounded up to the next whole hour (at least one)."""
    return max(math.ceil(duration * factor / 3600.0 - 1e-9), 1) * 3600.0


class _Part:
    __slots__ = ("factory", "free", "keys", "partition", "runs", "total")

    def __init__(self, factory: str, country: str, total: int) -> None:
        self.factory, self.total, self.free = factory, total, total
        self.partition = Partition(
            factory=factory,
            id="gpu",
            country=country,
            gpu_model="gpu",
            gpus_per_node=GPUS_PER_NODE,
            total_gpus=total,
            free_gpus=total,
        )
        self.keys: list[tuple[float, int]] = []  # (expected end, job), sorted
        self.runs: list[Running] = []  # in the same order

    def snapshot(self) -> Partition:
        p = self.partition
        return Partition(
            p.factory, p.id, p.country, p.gpu_model, p.gpus_per_node, p.total_gpus,
            self.free, running=tuple(self.runs),
        )  # fmt: skip

    def start(self, job: int, gpus: int, expected_end: float) -> None:
        if gpus > self.free:
            raise SimulationError(f"job {job}: {gpus} GPUs started on {self.free} free")
        self.free -= gpus
        index = bisect.bisect_left(self.keys, (expected_end, job))
        self.keys.insert(index, (expected_end, job))
        self.runs.insert(index, Running(gpus, expected_end))

    def end(self, job: int, gpus: int, expected_end: float) -> None:
        index = bisect.bisect_left(self.keys, (expected_end, job))
        if index == len(self.keys) or self.keys[index] != (expected_end, job):
            raise SimulationError(f"job {job} ended on {self.factory} where it did not run")
        del self.keys[index]
        del self.runs[index]
        self.free += gpus


class _Queue:
    """One scheduler: its waiting jobs and its partitions."""

    __slots__ = ("allocations", "dirty", "parts", "policy", "waiting")

    def __init__(self, parts: list[_Part], policy: Policy) -> None:
        self.parts = parts
        self.policy = policy
        self.waiting: dict[int, Job] = {}
        self.dirty = False
        self.allocations = tuple(
            Allocation(i, PROJECT, p.factory, math.inf) for i, p in enumerate(parts)
        )

    def could_start(self, gpus: int) -> bool:
        return any(p.free >= gpus for p in self.parts)


def simulate(
    jobs: Sequence[TraceJob],
    federation: Federation,
    policy: str,
    *,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
) -> Run:
    """Replay `jobs` (in submission order) under `policy` on `federation`."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    began = time.perf_counter()
    queues, queue_of = _queues(jobs, federation, policy)
    limits = [time_limit(j.duration, limit_factor) for j in jobs]
    countries = {s.id: s.country or s.id for s in federation.sites}
    home = federation.home()
    count = len(jobs)
    starts = [-1.0] * count
    ran_on: list[_Part | None] = [None] * count
    ends: list[tuple[float, int]] = []  # heap of (end, job)
    ended = passes = arrived = 0
    while arrived < count or ends:
        now = min(
            jobs[arrived].submit if arrived < count else math.inf,
            ends[0][0] if ends else math.inf,
        )
        while ends and ends[0][0] <= now:
            _, index = heapq.heappop(ends)
            part = ran_on[index]
            assert part is not None
            part.end(index, jobs[index].gpus, starts[index] + limits[index])
            queue_of[index].dirty = True
            ended += 1
        while arrived < count and jobs[arrived].submit <= now:
            job = jobs[arrived]
            queue = queue_of[arrived]
            queue.waiting[arrived] = Job(
                id=str(arrived),
                project=PROJECT,
                gpus=job.gpus,
                time_limit=limits[arrived],
                submitted_at=job.submit,
                nodes=math.ceil(job.gpus / GPUS_PER_NODE),
                home_country=countries[home[job.cluster]],
            )
            if not queue.dirty and queue.could_start(job.gpus):
                # beyond the depth a pass does not look at it: nothing to start
                queue.dirty = not queue_depth or len(queue.waiting) <= queue_depth
            arrived += 1
        for queue in queues:
            if not queue.dirty:
                continue
            queue.dirty = False
            if not queue.waiting:
                continue
            passes += 1
            for index, part in _pass(queue, now, queue_depth):
                if starts[index] >= 0:
                    raise SimulationError(f"job {index} started twice")
                starts[index] = now
                ran_on[index] = part
                part.start(index, jobs[index].gpus, now + limits[index])
                heapq.heappush(ends, (now + jobs[index].duration, index))
        if arrived == count and not ends and any(q.waiting for q in queues):
            stuck = sum(len(q.waiting) for q in queues)
            raise SimulationError(f"{stuck} jobs can never start")
    _check_end(queues, starts, ended)
    return Run(
        policy=policy,
        starts=tuple(starts),
        factories=tuple(p.factory if p else "" for p in ran_on),
        capacity=federation.gpus,
        passes=passes,
        events=2 * count,
        wall_seconds=time.perf_counter() - began,
    )


def _pass(queue: _Queue, now: float, depth: int) -> list[tuple[int, _Part]]:
    by_factory = {p.factory: p for p in queue.parts}
    waiting = queue.waiting.values()
    decision = schedule(
        Snapshot(
            now=now,
            jobs=tuple(islice(waiting, depth) if depth else waiting),
            partitions=tuple(p.snapshot() for p in queue.parts),
            allocations=queue.allocations,
            policy=queue.policy,
        )
    )
    started = []
    for assignment in decision.assignments:
        index = int(assignment.job)
        del queue.waiting[index]
        started.append((index, by_factory[assignment.factory]))
    return started


def _queues(
    jobs: Sequence[TraceJob], federation: Federation, policy: str
) -> tuple[list[_Queue], list[_Queue]]:
    home = federation.home()
    quiet = Policy(backfill=policy != "site-fifo", explain=False)
    if policy == "pooled":
        pool = _Queue([_Part("pool", "", federation.gpus)], quiet)
        return [pool], [pool] * len(jobs)
    parts = {s.id: _Part(s.id, s.country or s.id, s.gpus) for s in federation.sites}
    if policy == "federated":
        one = _Queue(list(parts.values()), quiet)
        return [one], [one] * len(jobs)
    per_site = {site: _Queue([part], quiet) for site, part in parts.items()}
    return list(per_site.values()), [per_site[home[j.cluster]] for j in jobs]


def _check_end(queues: list[_Queue], starts: list[float], ended: int) -> None:
    if any(s < 0 for s in starts) or ended != len(starts):
        raise SimulationError(f"{ended} of {len(starts)} jobs ended")
    for queue in queues:
        for part in queue.parts:
            if part.free != part.total or part.keys:
                raise SimulationError(f"{part.factory}: {part.total - part.free} GPUs still held")
