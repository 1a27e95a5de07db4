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
is back after the outage's duration. Under `pooled` the pool loses whole nodes holding the
factory's GPUs and the runs on them (without nodes: it shrinks by the factory's GPUs and
the most recently started jobs are lost until what runs fits).

Nodes (`partition._Part`): each factory is nodes of its `Hardware.gpus_per_node` (8 by
default) and the core packs jobs on them; a factory's `Hardware.speed` divides run times
and time limits there; a trace job with a `gpu_model` runs only on that model.

Priority is the core's fair share plus age with no recorded usage, so jobs are ranked by
submission; time limits (what backfill plans with) are the run time rounded up. A pass
sees the first `queue_depth` waiting jobs of its queue, as Slurm's backfill tests at most
`bf_max_job_test` jobs per cycle.

A pass is skipped when it provably starts nothing: after an arrival whose job fits in no
partition's free GPUs (earlier jobs could not start before, and nothing was released), or
when no waiting job (strict FIFO in submission order: the first) fits in free GPUs. A
strict FIFO pass sees the queue only up to its first job that cannot fit.
Every run checks conservation: each job starts once and ends once, a partition never
holds more GPUs than it has, and every GPU is free again at the end.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from fabbrica.sched import Job, Policy, Snapshot, schedule
from fabbrica.sim.federation import Federation, Site, node_shape
from fabbrica.sim.partition import (
    GPUS_PER_NODE as GPUS_PER_NODE,
)
from fabbrica.sim.partition import (
    Hardware as Hardware,
)
from fabbrica.sim.partition import (
    SimulationError as SimulationError,
)
from fabbrica.sim.partition import (
    _Part as _Part,
)
from fabbrica.sim.queue import PROJECT as PROJECT
from fabbrica.sim.queue import QUEUE_DEPTH as QUEUE_DEPTH
from fabbrica.sim.queue import _Queue as _Queue
from fabbrica.sim.trace import TraceJob

POLICIES = ("site-fifo", "site-backfill", "naive", "federated", "federated-single", "pooled")
LEASE = 60.0  # seconds: production's agent lease (backends.agent_link.DEFAULT_LEASE)


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
    # node packing: GPU-hours held beyond what jobs asked for (whole nodes above one
    # node's GPUs), and GPU-hours free while jobs waited but on nodes already in use
    # (fragmentation: free GPUs a waiting multi-node job cannot take)
    rounding_gpu_hours: float = 0.0
    fragmented_gpu_hours: float = 0.0


def time_limit(duration: float, factor: float) -> float:
    """The run time times `factor`, rounded up to the next whole hour (at least one)."""
    return max(math.ceil(duration * factor / 3600.0 - 1e-9), 1) * 3600.0


Route = Callable[[int], _Queue]


def _machines(site: Site) -> Hardware:
    gpu_model, gpus_per_node = node_shape(site)
    return Hardware(gpu_model=gpu_model, gpus_per_node=gpus_per_node)


def simulate(
    jobs: Sequence[TraceJob],
    federation: Federation,
    policy: str,
    *,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
    outages: Sequence[Outage] = (),
    hardware: Mapping[str, Hardware] | None = None,
    pack_nodes: bool = True,
) -> Run:
    """Replay `jobs` (in submission order) under `policy` on `federation`.

    `hardware`: factory id -> its machines (default: the factory's own GPU model and GPUs
    per node, from the catalog or a what-if, at the trace's speed; a federation sized from
    a trace has 8-GPU nodes of the trace's own model); `pack_nodes=False` counts GPUs per
    factory without nodes."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    began = time.perf_counter()
    machines = {s.id: (hardware or {}).get(s.id) or _machines(s) for s in federation.sites}
    queues, route = _queues(jobs, federation, policy, machines, pack_nodes)
    for position, queue in enumerate(queues):
        queue.position = position
        queue.depth = queue_depth
        if not outages:
            queue.keep_state()
    dirty: list[_Queue] = []  # the queues that could start something, once each
    pending = [0]  # jobs waiting in every queue

    def mark(queue: _Queue) -> None:
        if not queue.dirty:
            queue.dirty = True
            dirty.append(queue)

    per_node = min(h.gpus_per_node for h in machines.values())
    tally = [0]  # free GPUs on nodes partly in use, over every partition
    for one in (p for q in queues for p in q.parts):
        one.tally = tally
    pooled = policy == "pooled"
    limits = [time_limit(j.duration, limit_factor) for j in jobs]
    countries = {s.id: s.country or s.id for s in federation.sites}
    home = federation.home()
    core_jobs = _core_jobs(jobs, limits, limit_factor, per_node, pooled, countries, home)
    count = len(jobs)
    starts = [-1.0] * count
    ran_on: list[_Part | None] = [None] * count
    queue_of: list[_Queue | None] = [None] * count
    attempt = [0] * count
    ends: list[tuple[float, int, int]] = []  # heap of (end, job, attempt)
    changes = _outage_events(outages, federation, policy)  # heap of (time, kind, factory)
    sizes = {s.id: s.gpus for s in federation.sites}
    held = [0] * count  # GPUs each run holds (whole nodes above one node's GPUs)
    ended = passes = arrived = requeued = 0
    lost = rounding = fragmented = 0.0
    last = 0.0

    def enqueue(index: int) -> None:
        queue = queue_of[index] = route(index)
        pending[0] += 1
        job = core_jobs[index]
        queue.add(index, job)
        # beyond the depth a pass does not look at it: nothing to start
        if (
            not queue.dirty
            and queue.could_start(job.gpus)
            and (not queue_depth or len(queue.waiting) <= queue_depth)
        ):
            mark(queue)

    while arrived < count or ends or (changes and any(q.waiting for q in queues)):
        now = min(
            jobs[arrived].submit if arrived < count else math.inf,
            ends[0][0] if ends else math.inf,
            changes[0][0] if changes else math.inf,
        )
        if pack_nodes and now > last:
            if tally[0] and pending[0]:
                fragmented += tally[0] * (now - last)
            last = now
        while ends and ends[0][0] <= now:
            _, index, which = heapq.heappop(ends)
            if which != attempt[index]:
                continue  # a run lost to an outage
            part, owner = ran_on[index], queue_of[index]
            assert part is not None and owner is not None
            expected = starts[index] + limits[index] / part.speed
            if owner.core is not None:
                nodes = part.holding[index] if part.nodes is not None else ()
                owner.core.release(part.slot, held[index], expected, nodes)
            part.end(index, held[index], expected)
            mark(owner)
            ended += 1
        while changes and changes[0][0] <= now:
            _, kind, factory = heapq.heappop(changes)
            for part in (p for q in queues for p in q.parts):
                if part.factory != factory and part.factory != "pool":
                    continue
                share = part.total if part.factory == factory else sizes[factory]
                if kind == _DOWN:
                    part.take_down(share)
                elif kind == _UP:
                    part.bring_up(share)
                else:
                    for index in _lost_runs(part, starts):
                        part.end(index, held[index], starts[index] + limits[index] / part.speed)
                        lost += jobs[index].gpus * (now - starts[index]) / 3600.0
                        requeued += 1
                        attempt[index] += 1
                        starts[index], ran_on[index] = -1.0, None
                        enqueue(index)
            for queue in queues:
                mark(queue)
        while arrived < count and jobs[arrived].submit <= now:
            enqueue(arrived)
            arrived += 1
        if len(dirty) > 1:
            dirty.sort(key=_POSITION)
        for queue in dirty:
            queue.dirty = False
            if not queue.waiting or queue.idle():
                continue
            passes += 1
            started = _pass(queue, now, queue_depth, bool(outages))
            pending[0] -= len(started)
            for index, part, nodes, gpus in started:
                if starts[index] >= 0:
                    raise SimulationError(f"job {index} started twice")
                starts[index] = now
                ran_on[index] = part
                held[index] = gpus
                speed = part.speed
                part.start(index, gpus, now + limits[index] / speed, nodes)
                run = jobs[index].duration / speed
                rounding += (gpus - jobs[index].gpus) * run / 3600.0
                heapq.heappush(ends, (now + run, index, attempt[index]))
        dirty.clear()
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
        rounding_gpu_hours=rounding,
        fragmented_gpu_hours=fragmented / 3600.0,
    )


_POSITION = attrgetter("position")

# The core's jobs of the last replay, and what they were made from: the policies of one
# point replay the same jobs on the same federation, and a job is the same for each (but
# under `pooled`, which drops GPU-model pins). One entry, replaced whole: a sweep of other
# jobs or federations keeps no more than one replay's jobs.
_made: list[tuple[object, Sequence[TraceJob], tuple[Job, ...]]] = []


def _core_jobs(
    jobs: Sequence[TraceJob],
    limits: list[float],
    limit_factor: float,
    per_node: int,
    pooled: bool,
    countries: Mapping[str, str],
    home: Mapping[str, str],
) -> tuple[Job, ...]:
    """The core's job for each trace job (frozen values: one set serves every policy of
    the same jobs, given as a tuple of frozen `TraceJob`s, which nothing can change)."""
    unpinned = pooled and any(j.gpu_model for j in jobs)
    homes = tuple(sorted((cluster, countries[site]) for cluster, site in home.items()))
    key = (limit_factor, per_node, unpinned, homes)
    last = _made[0] if _made else None
    if last is not None and last[1] is jobs and last[0] == key:
        return last[2]
    made = tuple(
        Job(
            id=str(index),
            project=PROJECT,
            gpus=job.gpus,
            time_limit=limits[index],
            submitted_at=job.submit,
            nodes=math.ceil(job.gpus / per_node),
            gpu_model=None if unpinned else job.gpu_model,
            home_country=countries[home[job.cluster]],
        )
        for index, job in enumerate(jobs)
    )
    if isinstance(jobs, tuple):
        _made[:] = [(key, jobs, made)]
    return made


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
    of them for a factory that is down; for a pool, with nodes those on the nodes out of
    service, without them the most recently started first."""
    if part.nodes is not None and part.down < part.total:
        up = len(part.nodes) - part.down_nodes
        return sorted(j for j, nodes in part.holding.items() if max(nodes) >= up)
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


def _pass(
    queue: _Queue, now: float, depth: int, outages: bool
) -> list[tuple[int, _Part, tuple[int, ...], int]]:
    """Run one pass: (job, partition, its nodes, GPUs it holds) for each job started."""
    parts = queue.parts
    if outages and any(p.down for p in parts):
        parts = [p for p in parts if p.total > p.down]
        if not parts:
            return []
    by_factory = queue.by_factory
    if queue.core is not None:
        decision = queue.core.schedule(now, queue.head(depth))
    else:
        decision = schedule(
            Snapshot(
                now=now,
                jobs=queue.head(depth),
                partitions=tuple(p.snapshot() for p in parts),
                allocations=queue.allocations,
                policy=queue.policy,
            )
        )
    started = []
    if decision.assignments:
        queue.window = None  # the jobs started leave it
    for assignment in decision.assignments:
        index = int(assignment.job)
        gpus = queue.waiting.pop(index).gpus
        queue.queued -= gpus
        left = queue.sizes[gpus] - 1
        if left:
            queue.sizes[gpus] = left
        else:
            del queue.sizes[gpus]
        started.append(
            (index, by_factory[assignment.factory], assignment.nodes, assignment.gpus_held or gpus)
        )
    return started


def _queues(
    jobs: Sequence[TraceJob],
    federation: Federation,
    policy: str,
    machines: Mapping[str, Hardware],
    pack: bool,
) -> tuple[list[_Queue], Route]:
    home = federation.home()
    quiet = Policy(
        backfill=policy != "site-fifo",
        reservations="federation" if policy == "federated-single" else "partition",
        explain=False,
    )
    if policy == "pooled":
        # one pool of the reference model, nodes of the smallest factory's size
        per = min(h.gpus_per_node for h in machines.values())
        part = _Part("pool", "", federation.gpus, Hardware(gpus_per_node=per), pack=pack)
        pool = _Queue([part], quiet)
        return [pool], lambda _: pool
    parts = {
        s.id: _Part(s.id, s.country or s.id, s.gpus, machines[s.id], pack=pack)
        for s in federation.sites
    }
    if policy.startswith("federated"):
        one = _Queue(list(parts.values()), quiet)
        return [one], lambda _: one
    per_site = {site: _Queue([part], quiet) for site, part in parts.items()}
    if policy == "naive":
        sites = list(per_site.values())

        def least_loaded(index: int) -> _Queue:
            gpus, model = jobs[index].gpus, jobs[index].gpu_model
            fit = [
                q
                for q in sites
                if q.parts[0].total >= gpus
                and (model is None or q.parts[0].partition.gpu_model == model)
            ]
            if not fit:
                raise SimulationError(f"job {index} can never start: no factory fits it")
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
