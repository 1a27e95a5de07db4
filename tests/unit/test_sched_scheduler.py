"""`Scheduler` (the core's state kept between passes) decides as `schedule` on a snapshot
of the same moment: random sequences of passes, starts and ends, on partitions with and
without tracked nodes, of several speeds, compared Decision for Decision."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from fabbrica.sched import (
    Allocation,
    Job,
    Partition,
    Policy,
    Running,
    Scheduler,
    Snapshot,
    schedule,
)

H = 3600.0
SIZES = [1, 1, 1, 2, 3, 4, 4, 8, 8, 12, 16, 32, 64]


class _World:
    """What the partitions hold, kept by hand: the snapshot `schedule` is given."""

    def __init__(self, partitions: list[Partition]) -> None:
        self.partitions = partitions
        self.free = [p.total_gpus for p in partitions]
        self.nodes = [list(p.nodes_free) for p in partitions]
        self.running: list[list[Running]] = [[] for _ in partitions]

    def snapshot(self, i: int) -> Partition:
        runs = sorted(self.running[i], key=lambda r: r.expected_end)
        return replace(
            self.partitions[i],
            free_gpus=self.free[i],
            running=tuple(runs),
            nodes_free=tuple(self.nodes[i]),
        )

    def capacity(self, i: int, node: int) -> int:
        per, total = self.partitions[i].gpus_per_node, self.partitions[i].total_gpus
        return min(per, total - per * node)

    def start(self, i: int, gpus: int, end: float, nodes: tuple[int, ...]) -> None:
        self.free[i] -= gpus
        if nodes:
            if len(nodes) == 1 and gpus <= self.partitions[i].gpus_per_node:
                self.nodes[i][nodes[0]] -= gpus
            else:
                for node in nodes:
                    self.nodes[i][node] = 0
        self.running[i].append(Running(gpus, end, nodes))

    def end(self, i: int, run: Running) -> None:
        self.running[i].remove(run)
        self.free[i] += run.gpus
        if run.nodes:
            if len(run.nodes) == 1 and run.gpus <= self.partitions[i].gpus_per_node:
                self.nodes[i][run.nodes[0]] += run.gpus
            else:
                for node in run.nodes:
                    self.nodes[i][node] = self.capacity(i, node)


def _partitions(rng: random.Random) -> list[Partition]:
    parts = []
    for i in range(rng.randint(1, 6)):
        per = rng.choice([4, 8])
        total = per * rng.randint(2, 24) - rng.choice([0, 0, 1, 3])
        tracked = rng.random() < 0.6
        full, rest = divmod(total, per)
        parts.append(
            Partition(
                factory=f"f{i}",
                id="gpu",
                country=rng.choice(["DE", "IT", "FR"]),
                gpu_model=rng.choice(["h100", "gb300"]),
                gpus_per_node=per,
                total_gpus=total,
                free_gpus=total,
                nodes_free=tuple([per] * full + ([rest] if rest else [])) if tracked else (),
                speed=rng.choice([1.0, 1.0, 2.0, 0.5]),
            )
        )
    return parts


def _job(rng: random.Random, n: int, now: float, per: int) -> Job:
    gpus = rng.choice(SIZES)
    return Job(
        id=str(n),
        project=rng.choice(["p", "q", "r"]),
        gpus=gpus,
        nodes=-(-gpus // per),
        time_limit=rng.choice([H, 2 * H, 3 * H, 8 * H]),
        submitted_at=now - rng.choice([0.0, 0.0, 60.0]),
        gpu_model=rng.choice(["h100", "gb300"]) if rng.random() < 0.1 else None,
        home_country=rng.choice(["DE", "IT", None]),
    )


def _replay(seed: int, policy: Policy) -> int:
    """Passes compared; raises AssertionError at the first pass that differs."""
    rng = random.Random(seed)
    parts = _partitions(rng)
    per = min(p.gpus_per_node for p in parts)
    # p: unbounded everywhere (the simulator's), q: bounded everywhere, r: both
    allocations = tuple(
        Allocation(len(parts) * k + i + 1, project, part.factory, amount)
        for k, (project, amount) in enumerate(
            [("p", math.inf), ("q", 5e4), ("r", 300.0), ("r", math.inf)]
        )
        for i, part in enumerate(parts)
    )
    left = {a.id: a.remaining_gpu_hours for a in allocations}
    world = _World(parts)
    core = Scheduler(parts, allocations, policy)
    index = {p.key: i for i, p in enumerate(parts)}
    waiting: dict[str, Job] = {}
    now, n, compared = 0.0, 0, 0
    for _ in range(120):
        now += rng.choice([0.0, 60.0, 600.0, H])
        for i, runs in enumerate(world.running):
            for run in [r for r in runs if rng.random() < 0.15]:
                world.end(i, run)
                core.release(i, run.gpus, run.expected_end, run.nodes)
        for _ in range(rng.choice([0, 1, 1, 2, 5])):
            job = _job(rng, n, now, per)
            n += 1
            waiting[job.id] = job
        jobs = tuple(waiting.values())
        given = tuple(replace(a, remaining_gpu_hours=left[a.id]) for a in allocations)
        expected = schedule(
            Snapshot(now, jobs, tuple(world.snapshot(i) for i in range(len(parts))), given,
                     policy=policy)
        )  # fmt: skip
        decided = core.schedule(now, jobs)
        assert decided == expected, f"pass at {now}"
        compared += 1
        for a in decided.assignments:
            job = waiting.pop(a.job)
            i = index[(a.factory, a.partition)]
            end = now + job.time_limit / parts[i].speed
            world.start(i, a.gpus_held or job.gpus, end, a.nodes)
            left[a.allocation] -= a.charge_gpu_hours
    return compared


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "policy",
    [
        Policy(explain=False),
        Policy(backfill=False, explain=False),
        Policy(reservations="federation", explain=False),
        Policy(),
        Policy(backfill=False),
    ],
    ids=["easy-quiet", "fifo-quiet", "federation-quiet", "easy", "fifo"],
)
def test_a_kept_state_decides_as_a_snapshot_of_the_same_moment(seed: int, policy: Policy) -> None:
    assert _replay(seed, policy) == 120


def test_the_comparison_sees_a_release_the_core_was_not_told_of() -> None:
    """Work that ends in the world but not in the scheduler shows as a different pass."""
    part = Partition("f0", "gpu", "DE", "h100", 8, 8, 8, nodes_free=(8,))
    policy = Policy(explain=False)
    allocations = (Allocation(1, "p", "f0", 1e12),)
    core = Scheduler([part], allocations, policy)
    world = _World([part])
    first = Job("1", "p", 8, H, 0.0)
    (a,) = core.schedule(0.0, (first,)).assignments
    world.start(0, a.gpus_held, H, a.nodes)
    world.end(0, world.running[0][0])  # the scheduler is not told
    second = (Job("2", "p", 8, H, 60.0),)
    expected = schedule(Snapshot(60.0, second, (world.snapshot(0),), allocations, policy=policy))
    assert len(expected.assignments) == 1
    assert core.schedule(60.0, second).assignments == ()
    core.release(0, a.gpus_held, H, a.nodes)
    assert core.schedule(60.0, second) == expected


def test_without_the_order_a_decision_starts_the_same_jobs() -> None:
    rng = random.Random(5)
    parts = _partitions(rng)
    allocations = tuple(Allocation(i + 1, "p", p.factory, math.inf) for i, p in enumerate(parts))
    jobs = tuple(_job(rng, n, 0.0, 4) for n in range(40))
    named = Scheduler(parts, allocations, Policy(explain=False)).schedule(0.0, jobs)
    bare = Scheduler(parts, allocations, Policy(explain=False), order=False).schedule(0.0, jobs)
    assert len(named.order) == len(jobs)
    assert bare.order == ()
    assert bare.assignments == named.assignments
    assert bare.reservations == named.reservations
