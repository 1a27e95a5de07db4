"""The partition state's faster node and release-time paths answer exactly as before.

`tests/unit/capacity_reference.py` is a frozen copy of `PartitionState` before them. On
random partitions with tracked nodes (the simulator's kind: consistent free GPUs per node,
running work on its nodes, listed in order of expected end or not, with ties), both are
driven through the same starts and asked the same questions: whether a job fits now,
the nodes it would take, its earliest start packed and counted, the GPUs free at a time.
"""

from __future__ import annotations

import random

import pytest

from fabbrica.sched import Partition, Running
from fabbrica.sched.capacity import PartitionState
from tests.unit import capacity_reference

NOW = 1_000.0


def _partition(rng: random.Random, shuffled: bool) -> Partition:
    per = rng.choice([1, 2, 4, 8])
    count = rng.randint(1, 40)
    total = per * count - (rng.randint(1, per - 1) if per > 1 and rng.random() < 0.4 else 0)
    capacity = [min(per, total - per * i) for i in range(count)]
    free = list(capacity)
    running = []
    for _ in range(rng.randint(0, 3 * count)):
        end = NOW + rng.choice([60.0, 120.0, rng.uniform(1, 90_000)])  # ties on purpose
        if rng.random() < 0.2:  # whole free nodes
            whole = [i for i in range(count) if free[i] == capacity[i] and capacity[i]]
            taken = tuple(rng.sample(whole, min(len(whole), rng.randint(2, 4))))
            if len(taken) < 2:
                continue
            for i in taken:
                free[i] = 0
            running.append(Running(sum(capacity[i] for i in taken), end, taken))
        else:
            node = rng.randrange(count)
            if not free[node]:
                continue
            gpus = rng.randint(1, free[node])
            free[node] -= gpus
            running.append(Running(gpus, end, (node,)))
    if not shuffled:
        running.sort(key=lambda r: r.expected_end)
    return Partition(
        factory="f",
        id="gpu",
        country="IT",
        gpu_model="h100",
        gpus_per_node=per,
        total_gpus=total,
        free_gpus=sum(free),
        running=tuple(running),
        nodes_free=tuple(free),
    )


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "any-order"])
@pytest.mark.parametrize("seed", range(40))
def test_node_paths_answer_as_before(seed: int, shuffled: bool) -> None:
    rng = random.Random(seed)
    partition = _partition(rng, shuffled)
    fast = PartitionState(partition, partition.free_gpus)
    slow = capacity_reference.PartitionState.of(partition)
    per, total = partition.gpus_per_node, partition.total_gpus
    sizes = sorted({1, 2, 3, per, per + 1, 2 * per, 3 * per + 1, total, total + 1})
    for _ in range(12):
        for gpus in sizes:
            assert fast.fits(gpus) == slow.fits(gpus)
            assert fast.pack(gpus) == slow.pack(gpus)
            assert fast.earliest_packed(gpus, NOW) == slow.earliest_packed(gpus, NOW)
            assert fast.earliest(gpus, NOW) == slow.earliest(gpus, NOW)
        for when in (NOW, NOW + 60.0, NOW + 120.0, NOW + 50_000.0):
            assert fast.free_at(when) == slow.free_at(when)
        # start a job where it fits (some of the time after release times were sorted)
        fitting = [g for g in sizes if fast.fits(g)]
        if not fitting:
            break
        gpus = rng.choice(fitting)
        end = NOW + rng.choice([60.0, rng.uniform(1, 90_000)])
        assert fast.take(gpus, end) == slow.take(gpus, end)
        assert fast.nodes == slow.nodes
        assert fast.free == slow.free
