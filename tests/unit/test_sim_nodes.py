"""Per-factory reservations, node packing, GPU-model speeds and model-pinned jobs, on
hand-made cases whose answer is known by hand (the core's pass and the engine)."""

from __future__ import annotations

import random

import pytest

from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from fabbrica.sim.engine import Hardware, SimulationError, simulate
from fabbrica.sim.federation import Federation, Site
from fabbrica.sim.trace import TraceJob

H = 3600.0


def sites(**gpus: int) -> Federation:
    return Federation(tuple(Site(name, n, (name,)) for name, n in gpus.items()))


def test_a_large_job_at_one_factory_is_not_starved_by_small_jobs_elsewhere() -> None:
    # big (8 GPUs) is blocked at x (busy until 2 h); a higher-priority 10-GPU job that fits
    # only y (full until 5 h) blocks first. With one reservation for the federation it
    # takes the only one, and 1-GPU jobs of 3 h start on x's free GPUs and push big back;
    # per factory, x protects big.
    x, y = "x", "y"
    jobs = [
        TraceJob(0, 2 * H, 4, x),  # x: 4 of 8 busy until 2 h
        TraceJob(0, 5 * H, 16, y),  # y: full until 5 h
        TraceJob(10, H, 10, y),  # blocked: only y fits it
        TraceJob(20, H, 8, x),  # big: blocked (earliest start: 2 h at x)
        TraceJob(30, 3 * H, 1, x),  # small, 3 h: would run past big's start
        TraceJob(40, 3 * H, 1, x),
    ]
    federation = sites(x=8, y=16)
    fed = simulate(jobs, federation, "federated").starts
    single = simulate(jobs, federation, "federated-single").starts
    assert fed[3] == 2 * H  # big starts as soon as x drains
    assert single[3] > 2 * H  # one reservation (held at y): the small jobs delay it
    assert fed[4] >= 3 * H and fed[5] >= 3 * H  # the small jobs wait for big


def _partition(free: tuple[int, ...], per: int = 8, speed: float = 1.0) -> Partition:
    total = per * len(free)
    return Partition("f", "p", "IT", "h100", per, total, sum(free), nodes_free=free, speed=speed)


def _pass(partitions: tuple[Partition, ...], *jobs: Job) -> Snapshot:
    allocations = tuple(Allocation(i, "p", p.factory, 1e9) for i, p in enumerate(partitions))
    return Snapshot(0.0, jobs, partitions, allocations, policy=Policy(explain=False))


def job(name: str, gpus: int, model: str | None = None, at: float = 0.0) -> Job:
    return Job(name, "p", gpus, H, at, nodes=-(-gpus // 8), gpu_model=model)


def test_small_jobs_pack_into_the_fullest_node_that_fits() -> None:
    # nodes with 3, 8 and 5 free: a 2-GPU job goes to the node with 3 (best fit), a
    # 5-GPU job to the one with 5, and the whole free node is kept for an 8-GPU job
    d = schedule(_pass((_partition((3, 8, 5)),), job("a", 2), job("b", 5), job("c", 8)))
    placed = {a.job: a.nodes for a in d.assignments}
    assert placed == {"a": (0,), "b": (2,), "c": (1,)}


def test_a_job_above_one_node_takes_whole_free_nodes_and_fragmentation_blocks_it() -> None:
    # 12 free GPUs but on three partly used nodes: a 12-GPU job (two whole nodes) waits
    fragmented = _partition((4, 4, 4))
    assert schedule(_pass((fragmented,), job("big", 12))).assignments == ()
    # two whole nodes free: it takes both and holds their 16 GPUs
    d = schedule(_pass((_partition((8, 3, 8)),), job("big", 12)))
    [a] = d.assignments
    assert (a.nodes, a.gpus_held) == ((0, 2), 16)


def test_jobs_asking_for_a_model_go_only_there() -> None:
    slow = _partition((8,))
    fast = Partition("g", "p", "DE", "gb300", 8, 8, 8, nodes_free=(8,), speed=2.0)
    allocations = (Allocation(0, "p", "f", 1e9), Allocation(1, "p", "g", 1e9))
    snap = Snapshot(
        0.0,
        (job("pinned", 4, "gb300"), job("other", 4, "h100")),
        (slow, fast),
        allocations,
        policy=Policy(explain=False),
    )
    placed = {a.job: a.factory for a in schedule(snap).assignments}
    assert placed == {"pinned": "g", "other": "f"}


def test_run_times_scale_with_the_model_speed_and_pinned_jobs_stay_on_their_model() -> None:
    federation = sites(slow=8, fast=8)
    hardware = {"slow": Hardware("h100", 8, 1.0), "fast": Hardware("gb300", 8, 2.0)}
    jobs = [
        TraceJob(0, 4 * H, 8, "slow", "gb300"),  # pinned: runs 2 h on the fast model
        TraceJob(1, 4 * H, 8, "slow", "gb300"),  # pinned too: waits for the fast factory
        TraceJob(2, 4 * H, 8, "slow"),  # any model: starts on the slow one
    ]
    run = simulate(jobs, federation, "federated", hardware=hardware)
    assert run.factories == ("fast", "fast", "slow")
    assert run.starts == (0, 2 * H, 2)
    # pinned to a model no factory has: it can never start
    with pytest.raises(SimulationError, match="never start"):
        simulate([TraceJob(0, H, 1, "slow", "mi300x")], federation, "naive", hardware=hardware)


def test_the_engine_counts_whole_node_rounding_and_fragmentation() -> None:
    # 16 GPUs in two nodes; a 1-GPU job splits node 0, so a 9-GPU job (two whole nodes,
    # 16 GPUs held) waits although 15 GPUs are free: fragmentation while it waits
    jobs = [TraceJob(0, H, 1, "x"), TraceJob(10, H, 9, "x")]
    run = simulate(jobs, sites(x=16), "site-backfill")
    assert run.starts == (0, H)
    assert run.rounding_gpu_hours == pytest.approx(7.0)  # 9 asked, 16 held for 1 h
    assert run.fragmented_gpu_hours == pytest.approx(7 * (H - 10) / H)
    flat = simulate(jobs, sites(x=16), "site-backfill", pack_nodes=False)
    assert flat.starts == (0, 10) and flat.rounding_gpu_hours == 0.0


def test_random_passes_never_overfill_a_node_and_quiet_passes_start_the_same() -> None:
    rng = random.Random(19)
    for _ in range(150):
        per = rng.choice([4, 8])
        partitions = []
        for name in ("f", "g"):
            count = rng.randint(1, 6)
            total = per * count - rng.choice([0, 0, 1, 2])
            capacity = [min(per, total - per * i) for i in range(count)]
            given = tuple(rng.randint(0, c) for c in capacity)
            partitions.append(
                Partition(name, "p", "IT", "h100", per, total, sum(given), nodes_free=given)
            )
        jobs = tuple(
            Job(f"j{i}", "p", rng.choice([1, 2, 3, 4, 8, 12, 16]), H, float(i))
            for i in range(rng.randint(1, 12))
        )
        allocations = (Allocation(0, "p", "f", 1e9), Allocation(1, "p", "g", 1e9))
        decisions = [
            schedule(Snapshot(0.0, jobs, tuple(partitions), allocations, policy=Policy(explain=e)))
            for e in (True, False)
        ]
        assert decisions[0].assignments == decisions[1].assignments
        sizes = {j.id: j.gpus for j in jobs}
        free = {p.factory: list(p.nodes_free) for p in partitions}
        for a in decisions[0].assignments:
            nodes = free[a.factory]
            if sizes[a.job] <= per:
                assert len(a.nodes) == 1 and a.gpus_held == sizes[a.job]
                nodes[a.nodes[0]] -= sizes[a.job]
            else:
                assert a.gpus_held >= sizes[a.job]
                for i in a.nodes:  # whole free nodes
                    whole = min(
                        per,
                        next(p.total_gpus for p in partitions if p.factory == a.factory) - per * i,
                    )
                    assert nodes[i] == whole
                    nodes[i] = 0
        assert all(f >= 0 for n in free.values() for f in n)


def test_a_reservation_on_tracked_nodes_waits_for_whole_nodes_not_free_gpus() -> None:
    # 12 GPUs free, 4 on each node; the 4-GPU jobs on nodes 0, 1, 2 end at 3 h, 1 h, 2 h:
    # a 12-GPU job needs two whole nodes, free at 2 h (counting GPUs would say now)
    running = (
        Running(4, 3 * H, (0,)),
        Running(4, 1 * H, (1,)),
        Running(4, 2 * H, (2,)),
    )
    part = Partition("f", "p", "IT", "h100", 8, 24, 12, running=running, nodes_free=(4, 4, 4))
    d = schedule(_pass((part,), job("big", 12)))
    assert d.assignments == ()
    assert d.reservation is not None and d.reservation.start == 2 * H
