"""The scheduling pass's faster hot paths decide exactly what the pass decided before.

`tests/unit/sched_reference.py` is a frozen copy of the pass before it was made faster;
on random workloads (small ones from hypothesis, larger ones shaped like the
bench's federation) both must return the same Decision: the same placements, reservations,
reasons, estimated starts and order.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from tests.unit import sched_reference
from tests.unit.test_sched_properties import snapshots

H = 3600.0
NOW = 1_800_000_000.0
SIZES = [1, 1, 1, 2, 4, 4, 8, 8, 8, 16, 32, 64, 128, 512]


def _with(snapshot: Snapshot, policy: Policy) -> Snapshot:
    return Snapshot(
        now=snapshot.now,
        jobs=snapshot.jobs,
        partitions=snapshot.partitions,
        allocations=snapshot.allocations,
        shares=snapshot.shares,
        usage=snapshot.usage,
        policy=policy,
    )


@settings(max_examples=400, deadline=None)
@given(snapshots(), st.booleans(), st.booleans())
def test_small_random_passes_decide_the_same(
    snapshot: Snapshot, explain: bool, uneven: bool
) -> None:
    usage = {"p": 10.0, "q": 40.0} if uneven else {}
    policy = Policy(
        backfill=snapshot.policy.backfill,
        reservations=snapshot.policy.reservations,
        explain=explain,
    )
    snapshot = Snapshot(
        now=snapshot.now,
        jobs=snapshot.jobs,
        partitions=snapshot.partitions,
        allocations=snapshot.allocations,
        usage=usage,
        policy=policy,
    )
    assert schedule(snapshot) == sched_reference.schedule(snapshot)


def _partition(rng: random.Random, i: int) -> Partition:
    per_node = rng.choice([1, 4, 8])
    total = per_node * rng.randint(1, 300)
    running, used = [], 0
    busy = rng.uniform(0.3, 1.0)
    while used < busy * total:
        gpus = min(rng.choice(SIZES), total - used)
        # repeated ends on purpose: ties in release times
        running.append(Running(gpus, NOW + rng.choice([1, 2, 3, rng.uniform(0.1, 48)]) * H))
        used += gpus
    return Partition(
        factory=f"f{i % 9}",
        id=f"p{i}",
        country=rng.choice(["DE", "IT", "FR", "ES"]),
        gpu_model=rng.choice(["h100", "a100", "gb300"]),
        gpus_per_node=per_node,
        total_gpus=total,
        free_gpus=total - used,
        billing_factor=rng.choice([1.0, 0.5, 2.5]),
        whole_nodes=rng.random() < 0.3,
        multi_node=rng.random() < 0.8,
        running=tuple(running),
    )


def _workload(seed: int, count: int) -> Snapshot:
    rng = random.Random(seed)
    parts = [_partition(rng, i) for i in range(rng.randint(3, 14))]
    factories = [*sorted({p.factory for p in parts}), "nowhere"]
    projects = [f"P{i}" for i in range(rng.randint(3, 40))]
    allocations: list[Allocation] = []
    for project in projects:
        for factory in rng.sample(factories, k=rng.randint(0, 4)):
            allocations.append(
                Allocation(
                    len(allocations) + 1,
                    project,
                    factory,
                    rng.choice([0.0, 5.0]) if rng.random() < 0.2 else rng.uniform(1_000, 200_000),
                    rng.choice([None, None, "h100", "a100"]),
                )
            )
    jobs = []
    for i in range(count):
        gpus = rng.choice(SIZES)
        jobs.append(
            Job(
                id=f"j{i}",
                project=rng.choice(projects),
                gpus=gpus,
                nodes=rng.choice([1, max(1, gpus // 4), max(1, gpus // 8)]),
                time_limit=rng.choice([H, 2 * H, rng.uniform(0.1, 48) * H]),
                # repeated submission times on purpose: ties in the order
                submitted_at=NOW - rng.choice([60.0, 120.0, rng.uniform(0, 9 * 86400)]),
                gpu_model=rng.choice(["h100", "a100", "gb300"]) if rng.random() < 0.3 else None,
                factories=frozenset(rng.sample(factories, 2)) if rng.random() < 0.1 else None,
                countries=frozenset(rng.sample(["DE", "IT", "FR", "ES", "PL"], 2))
                if rng.random() < 0.2
                else None,
                home_country=rng.choice(["DE", "IT", "FR", "ES", None]),
            )
        )
    usage = {p: rng.uniform(0, 5_000) for p in projects if rng.random() < 0.7}
    shares = {p: rng.choice([1.0, 2.0, 0.5]) for p in projects if rng.random() < 0.3}
    return Snapshot(NOW, tuple(jobs), tuple(parts), tuple(allocations), shares, usage)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "policy",
    [
        Policy(),
        Policy(backfill=False),
        Policy(reservations="federation"),
        Policy(explain=False),
        Policy(backfill=False, explain=False),
        Policy(reservations="federation", explain=False),
    ],
    ids=["easy", "fifo", "federation", "easy-quiet", "fifo-quiet", "federation-quiet"],
)
def test_large_random_passes_decide_the_same(seed: int, policy: Policy) -> None:
    snapshot = _with(_workload(seed, 1_500), policy)
    fast, reference = schedule(snapshot), sched_reference.schedule(snapshot)
    assert fast.assignments == reference.assignments
    assert fast.reservations == reference.reservations
    assert fast.waiting == reference.waiting
    assert fast == reference
    assert fast.assignments  # the workloads place some jobs and leave others waiting
    assert len(fast.assignments) < len(snapshot.jobs)
