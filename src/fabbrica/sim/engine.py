"""The discrete-event engine: replays jobs through `fabbrica.sched.schedule`.

Events are arrivals (from the trace) and ends (start + real run time). At each instant the
engine releases what ended, queues what arrived, then runs one scheduling pass for every
queue that could start something: the production core decides, the engine applies its
assignments. Policies differ only in what a queue and its partitions are:

- site-fifo / site-backfill: one queue per factory, holding its home jobs, on that
  factory's GPUs alone (each site runs its own scheduler, as Slurm does today);
- federated: one queue, every factory a partition: Fabbrica's placement (EASY backfill
  with one reservation per factory); federated-single: the same with one reservation for
  the whole federation (the core's behaviour before 0.x, kept as a reference);
- naive: one queue per factory, each job sent on arrival to the least-loaded factory that
  fits it (GPUs running and queued over its GPUs), where it waits in that site's queue;
- pooled: one queue on one partition with all the GPUs.

Outages (`Outage`): from its start a factory takes no new job; what runs there is lost
`LEASE` seconds later (as production loses a job whose agent lease runs out), its GPU-time
so far counted as lost, and the job is queued again with its submission time; the factory
is back after the outage's duration. Under `pooled` the pool shrinks by the factory's GPUs
and the most recently started jobs are lost until what runs fits.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from fabbrica.sim.federation import Federation
from fabbrica.sim.trace import TraceJob

POLICIES = ("site-fifo", "site-backfill", "naive", "federated", "federated-single", "pooled")
# Jobs each pass looks at, in priority order, as Slurm's backfill tests at most
# bf_max_job_test jobs per cycle (500 by default); 0: the whole queue.
QUEUE_DEPTH = 500
GPUS_PER_NODE = 8
PROJECT = "trace"
LEASE = 60.0  # seconds: production's agent lease (backends.agent_link.DEFAULT_LEASE)


class SimulationError(RuntimeError):
    """A conservation check failed: a bug, never a property of the trace."""


@dataclass(frozen=True)
class Outage:
    factory: str
    start: float  # seconds after the trace's first submission
    duration: float


@dataclass(frozen=True)
class Run:
    policy: str
    starts: tuple[float, ...]  # per job, in the order of the jobs given (the last start)
    factories: tuple[str, ...]  # where each job ran
    capacity: int  # GPUs
    passes: int
    events: int
    wall_seconds: float
    requeued: int = 0  # runs lost to outages (a job lost twice counts twice)
    lost_gpu_hours: float = 0.0  # GPU-time those runs had used when they were lost


def time_limit(duration: float, factor: float) -> float:
    """The run time times `factor`, rounded up to the next whole hour (at least one)."""
    return max(math.ceil(duration * factor / 3600.0 - 1e-9), 1) * 3600.0


class _Part:
    __slots__ = ("down", "factory", "free", "keys", "partition", "runs", "total")

    def __init__(self, factory: str, country: str, total: int) -> None:
        self.factory, self.total, self.free = factory, total, total
        self.down = 0  # GPUs out of service (outages)
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

    @property
    def available(self) -> int:
        return max(self.free - self.down, 0)

    def snapshot(self) -> Partition:
        p = self.partition
        return Partition(
            p.factory, p.id, p.country, p.gpu_model, p.gpus_per_node, p.total_gpus - self.down,
            self.available, running=tuple(self.runs),
        )  # fmt: skip

    def start(self, job: int, gpus: int, expected_end: float) -> None:
        if gpus > self.available:
            raise SimulationError(f"job {job}: {gpus} GPUs started on {self.available} free")
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

    __slots__ = ("allocations", "dirty", "parts", "policy", "queued", "waiting")

    def __init__(self, parts: list[_Part], policy: Policy) -> None:
        self.parts = parts
        self.policy = policy
        self.waiting: dict[int, Job] = {}
        self.queued = 0  # GPUs of the waiting jobs
        self.dirty = False
        self.allocations = tuple(
            Allocation(i, PROJECT, p.factory, math.inf) for i, p in enumerate(parts)
        )

    def could_start(self, gpus: int) -> bool:
        return any(p.available >= gpus for p in self.parts)

    def add(self, index: int, job: Job) -> None:
        self.waiting[index] = job
        self.queued += job.gpus

    def load(self) -> float:
        """GPUs running and queued over the GPUs (the naive router's measure)."""
        total = sum(p.total for p in self.parts)
        return (total - sum(p.free for p in self.parts) + self.queued) / total


Route = Callable[[int], _Queue]


def simulate(
    jobs: Sequence[TraceJob],
    federation: Federation,
    policy: str,
    *,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
    outages: Sequence[Outage] = (),
) -> Run:
    """Replay `jobs` (in submission order) under `policy` on `federation`."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    began = time.perf_counter()
    queues, route = _queues(jobs, federation, policy)
    limits = [time_limit(j.duration, limit_factor) for j in jobs]
    countries = {s.id: s.country or s.id for s in federation.sites}
    home = federation.home()
    count = len(jobs)
    starts = [-1.0] * count
    ran_on: list[_Part | None] = [None] * count
    queue_of: list[_Queue | None] = [None] * count
    attempt = [0] * count
    ends: list[tuple[float, int, int]] = []  # heap of (end, job, attempt)
    changes = _outage_events(outages, federation, policy)  # heap of (time, kind, factory)
    sizes = {s.id: s.gpus for s in federation.sites}
    ended = passes = arrived = requeued = 0
    lost = 0.0

    def enqueue(index: int) -> None:
        queue = queue_of[index] = route(index)
        job = jobs[index]
        queue.add(
            index,
            Job(
                id=str(index),
                project=PROJECT,
                gpus=job.gpus,
                time_limit=limits[index],
                submitted_at=job.submit,
                nodes=math.ceil(job.gpus / GPUS_PER_NODE),
                home_country=countries[home[job.cluster]],
            ),
        )
        if not queue.dirty and queue.could_start(job.gpus):
            # beyond the depth a pass does not look at it: nothing to start
            queue.dirty = not queue_depth or len(queue.waiting) <= queue_depth

    while arrived < count or ends or (changes and any(q.waiting for q in queues)):
        now = min(
            jobs[arrived].submit if arrived < count else math.inf,
            ends[0][0] if ends else math.inf,
            changes[0][0] if changes else math.inf,
        )
        while ends and ends[0][0] <= now:
            _, index, which = heapq.heappop(ends)
            if which != attempt[index]:
                continue  # a run lost to an outage
            part, queue = ran_on[index], queue_of[index]
            assert part is not None and queue is not None
            part.end(index, jobs[index].gpus, starts[index] + limits[index])
            queue.dirty = True
            ended += 1
        while changes and changes[0][0] <= now:
            _, kind, factory = heapq.heappop(changes)
            for part in (p for q in queues for p in q.parts):
                if part.factory != factory and part.factory != "pool":
                    continue
                share = part.total if part.factory == factory else sizes[factory]
                if kind == _DOWN:
                    part.down += share
                elif kind == _UP:
                    part.down -= share
                else:
                    for index in _lost_runs(part, starts):
                        gpus = jobs[index].gpus
                        part.end(index, gpus, starts[index] + limits[index])
                        lost += gpus * (now - starts[index]) / 3600.0
                        requeued += 1
                        attempt[index] += 1
                        starts[index], ran_on[index] = -1.0, None
                        enqueue(index)
            for queue in queues:
                queue.dirty = True
        while arrived < count and jobs[arrived].submit <= now:
            enqueue(arrived)
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
                heapq.heappush(ends, (now + jobs[index].duration, index, attempt[index]))
        if arrived == count and not ends and not changes and any(q.waiting for q in queues):
            stuck = sum(len(q.waiting) for q in queues)
            raise SimulationError(f"{stuck} jobs can never start")
    _check_end(queues, starts, ended)
    return Run(
        policy=policy,
        starts=tuple(starts),
        factories=tuple(p.factory if p else "" for p in ran_on),
        capacity=federation.gpus,
        passes=passes,
        events=2 * count + 2 * requeued,
        wall_seconds=time.perf_counter() - began,
        requeued=requeued,
        lost_gpu_hours=lost,
    )


_DOWN, _LOST, _UP = 0, 1, 2  # outage events at the same instant: down, then lost, then up


def _outage_events(
    outages: Sequence[Outage], federation: Federation, policy: str
) -> list[tuple[float, int, str]]:
    known = {s.id for s in federation.sites}
    events = []
    for outage in outages:
        if outage.factory not in known:
            raise ValueError(f"outage of {outage.factory}: no such factory")
        events.append((outage.start, _DOWN, outage.factory))
        if outage.duration > LEASE:  # back within the lease: what ran there survives
            events.append((outage.start + LEASE, _LOST, outage.factory))
        events.append((outage.start + outage.duration, _UP, outage.factory))
    heapq.heapify(events)
    return events


def _lost_runs(part: _Part, starts: list[float]) -> list[int]:
    """The runs a partition loses when its GPUs out of service exceed what is free: all
    of them for a factory that is down, the most recently started first for a pool."""
    excess = part.down - part.free
    if excess <= 0:
        return []
    pairs = zip(part.keys, part.runs, strict=True)
    running = sorted((starts[j], j, r.gpus) for (_, j), r in pairs)
    found = []
    while excess > 0 and running:
        _, index, gpus = running.pop()
        found.append(index)
        excess -= gpus
    return found


def _pass(queue: _Queue, now: float, depth: int) -> list[tuple[int, _Part]]:
    parts = [p for p in queue.parts if p.total > p.down]
    if not parts:
        return []
    by_factory = {p.factory: p for p in parts}
    waiting = queue.waiting.values()
    decision = schedule(
        Snapshot(
            now=now,
            jobs=tuple(islice(waiting, depth) if depth else waiting),
            partitions=tuple(p.snapshot() for p in parts),
            allocations=queue.allocations,
            policy=queue.policy,
        )
    )
    started = []
    for assignment in decision.assignments:
        index = int(assignment.job)
        queue.queued -= queue.waiting.pop(index).gpus
        started.append((index, by_factory[assignment.factory]))
    return started


def _queues(
    jobs: Sequence[TraceJob], federation: Federation, policy: str
) -> tuple[list[_Queue], Route]:
    home = federation.home()
    quiet = Policy(
        backfill=policy != "site-fifo",
        reservations="federation" if policy == "federated-single" else "partition",
        explain=False,
    )
    if policy == "pooled":
        pool = _Queue([_Part("pool", "", federation.gpus)], quiet)
        return [pool], lambda _: pool
    parts = {s.id: _Part(s.id, s.country or s.id, s.gpus) for s in federation.sites}
    if policy.startswith("federated"):
        one = _Queue(list(parts.values()), quiet)
        return [one], lambda _: one
    per_site = {site: _Queue([part], quiet) for site, part in parts.items()}
    if policy == "naive":
        sites = list(per_site.values())

        def least_loaded(index: int) -> _Queue:
            gpus = jobs[index].gpus
            fit = [q for q in sites if q.parts[0].total >= gpus]
            return min(fit, key=lambda q: (q.load(), -q.parts[0].total, q.parts[0].factory))

        return sites, least_loaded
    return list(per_site.values()), lambda index: per_site[home[jobs[index].cluster]]


def _check_end(queues: list[_Queue], starts: list[float], ended: int) -> None:
    if any(s < 0 for s in starts) or ended != len(starts):
        raise SimulationError(f"{ended} of {len(starts)} jobs ended")
    for queue in queues:
        for part in queue.parts:
            if part.free != part.total or part.keys:
                raise SimulationError(f"{part.factory}: {part.total - part.free} GPUs still held")
