"""Invariants of the scheduling core on random federations (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from fabbrica.sched.capacity import PartitionState

H = 3600.0
FACTORIES = [("a", "DE"), ("b", "IT"), ("c", "FR")]
MODELS = ["h100", "a100"]


@st.composite
def partitions(draw: st.DrawFn) -> Partition:
    factory, country = draw(st.sampled_from(FACTORIES))
    per_node = draw(st.sampled_from([1, 4, 8]))
    total = per_node * draw(st.integers(1, 6))
    running = draw(st.lists(st.tuples(st.integers(1, 8), st.floats(1, 48 * H)), max_size=4))
    used, held = 0, []
    for gpus, end in running:
        if used + gpus <= total:
            used += gpus
            held.append(Running(gpus, end))
    return Partition(
        factory=factory,
        id=f"p{draw(st.integers(0, 1))}",
        country=country,
        gpu_model=draw(st.sampled_from(MODELS)),
        gpus_per_node=per_node,
        total_gpus=total,
        free_gpus=total - used,
        multi_node=draw(st.booleans()),
        running=tuple(held),
    )


@st.composite
def jobs(draw: st.DrawFn, index: int) -> Job:
    return Job(
        id=f"j{index}",
        project=draw(st.sampled_from(["p", "q"])),
        gpus=draw(st.integers(1, 16)),
        nodes=draw(st.integers(1, 2)),
        time_limit=draw(st.floats(0.1 * H, 24 * H)),
        submitted_at=draw(st.floats(0, 1000)),
        gpu_model=draw(st.none() | st.sampled_from(MODELS)),
        factories=draw(st.none() | st.frozensets(st.sampled_from(["a", "b", "c"]), min_size=1)),
        countries=draw(st.none() | st.frozensets(st.sampled_from(["DE", "IT", "FR"]), min_size=1)),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    parts = draw(st.lists(partitions(), min_size=1, max_size=6, unique_by=lambda p: p.key))
    count = draw(st.integers(1, 14))
    queue = tuple(draw(jobs(i)) for i in range(count))
    allocs = tuple(
        Allocation(
            i, project, factory, draw(st.floats(0, 400)), draw(st.none() | st.sampled_from(MODELS))
        )
        for i, (project, factory) in enumerate(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["a", "b", "c"])),
                    max_size=6,
                )
            )
        )
    )
    return Snapshot(
        now=1000.0,
        jobs=queue,
        partitions=tuple(parts),
        allocations=allocs,
        policy=Policy(
            backfill=draw(st.booleans()),
            reservations=draw(st.sampled_from(("partition", "federation"))),
        ),
    )


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_invariants(snapshot: Snapshot) -> None:
    decision = schedule(snapshot)
    parts = {p.key: p for p in snapshot.partitions}
    by_id = {j.id: j for j in snapshot.jobs}
    allocs = {a.id: a for a in snapshot.allocations}

    # every job is either placed once or waits with a reason
    placed = [a.job for a in decision.assignments]
    waiting = [w.job for w in decision.waiting]
    assert sorted(placed + waiting) == sorted(by_id)
    assert all(w.reason for w in decision.waiting)

    used: dict[tuple[str, str], int] = defaultdict(int)
    charged: dict[int, float] = defaultdict(float)
    for a in decision.assignments:
        job, part = by_id[a.job], parts[(a.factory, a.partition)]
        used[part.key] += job.gpus
        charged[a.allocation] += a.charge_gpu_hours
        # allow-list, residency, GPU model, nodes, the allocation's factory and model
        assert job.factories is None or part.factory in job.factories
        assert job.countries is None or part.country in job.countries
        assert job.gpu_model is None or part.gpu_model == job.gpu_model
        assert job.nodes == 1 or part.multi_node
        grant = allocs[a.allocation]
        assert grant.project == job.project and grant.factory == part.factory
        assert grant.gpu_model in (None, part.gpu_model)
    # a partition never holds more GPUs than it has free
    for key, gpus in used.items():
        assert gpus <= parts[key].free_gpus
    # charged hours never exceed what an allocation has left
    for allocation_id, hours in charged.items():
        assert hours <= allocs[allocation_id].remaining_gpu_hours + 1e-6

    # backfill never delays a reserved job; at most one reservation per partition
    assert decision.reservation == (decision.reservations[0] if decision.reservations else None)
    held_at = [(r.factory, r.partition) for r in decision.reservations]
    assert len(held_at) == len(set(held_at))
    for held in decision.reservations:
        state = PartitionState.of(parts[(held.factory, held.partition)])
        for a in decision.assignments:
            if (a.factory, a.partition) == (held.factory, held.partition):
                state.start(by_id[a.job].gpus, snapshot.now + by_id[a.job].time_limit)
        start = state.earliest(held.gpus, snapshot.now)
        assert start is not None and start <= held.start + 1e-6


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_quiet_pass_places_the_same_jobs(snapshot: Snapshot) -> None:
    """The simulator's passes (explain off, with their shortcuts) start exactly the jobs a
    production pass starts, at the same partitions, and hold the same reservation."""
    loud = schedule(snapshot)
    quiet_policy = Policy(
        backfill=snapshot.policy.backfill,
        reservations=snapshot.policy.reservations,
        explain=False,
    )
    quiet = schedule(
        Snapshot(
            now=snapshot.now,
            jobs=snapshot.jobs,
            partitions=snapshot.partitions,
            allocations=snapshot.allocations,
            policy=quiet_policy,
        )
    )
    assert quiet.assignments == loud.assignments
    assert quiet.reservation == loud.reservation
    assert quiet.reservations == loud.reservations
    assert quiet.waiting == ()
    assert quiet.order == loud.order


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["p", "q"]), st.floats(0, 30 * 86400)), max_size=30),
    st.floats(0, 60 * 86400),
    st.sampled_from([0.0, 1.0, 100.0]),
    st.booleans(),
)
def test_the_even_fair_share_shortcut_keeps_the_order(
    queue: list[tuple[str, float]], now: float, age_weight: float, even: bool
) -> None:
    """With every project's fair share equal, `order` sorts by submission instead of
    computing priorities: it must give exactly the order the priorities give."""
    from fabbrica.sched.priority import order, priority

    jobs = [Job(f"j{i}", project, 1, H, at) for i, (project, at) in enumerate(queue)]
    factors = {"p": 0.5, "q": 0.5} if even else {"p": 0.5, "q": 0.25}
    policy = Policy(age_weight=age_weight)
    expected = sorted(
        jobs,
        key=lambda j: (-priority(j, now, factors[j.project], policy), j.submitted_at, j.id),
    )
    assert order(jobs, now, factors, policy) == expected
