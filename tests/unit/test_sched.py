"""The scheduling core on small hand-made federations whose right answer is known."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fabbrica.sched import (
    Allocation,
    Decision,
    Job,
    Partition,
    Policy,
    Running,
    Snapshot,
    schedule,
)
from fabbrica.sched.reasons import after

H = 3600.0


def part(factory: str, total: int, free: int | None = None, **kw: Any) -> Partition:
    base = Partition(
        factory=factory,
        id="gpu",
        country="DE",
        gpu_model="h100",
        gpus_per_node=16,
        total_gpus=total,
        free_gpus=total if free is None else free,
    )
    return replace(base, **kw)


def job(id: str, gpus: int, hours: float = 1, at: float = 0, **kw: Any) -> Job:
    base = Job(id=id, project="p", gpus=gpus, time_limit=hours * H, submitted_at=at)
    return replace(base, **kw)


def grants(*factories: str, hours: float = 1e6, project: str = "p") -> tuple[Allocation, ...]:
    return tuple(Allocation(i, project, f, hours) for i, f in enumerate(factories, 1))


def snap(
    jobs: list[Job],
    parts: list[Partition],
    allocs: tuple[Allocation, ...] | None = None,
    **kw: Any,
) -> Snapshot:
    allocs = allocs if allocs is not None else grants(*{p.factory for p in parts})
    base = Snapshot(now=0.0, jobs=tuple(jobs), partitions=tuple(parts), allocations=allocs)
    return replace(base, **kw)


def placed(decision: Decision) -> dict[str, str]:
    return {a.job: a.factory for a in decision.assignments}


def reason(decision: Decision, job_id: str) -> str:
    return next(w.reason for w in decision.waiting if w.job == job_id)


def test_first_come_first_served_when_all_else_is_equal() -> None:
    d = schedule(snap([job("b", 4, at=20), job("a", 4, at=10), job("c", 4, at=30)], [part("x", 8)]))
    assert d.order == ("a", "b", "c")
    assert placed(d) == {"a": "x", "b": "x"}
    assert "c" in {w.job for w in d.waiting}


def test_a_backfill_that_must_happen() -> None:
    # 4 of 8 GPUs busy for 2 h; "big" needs 8 (reserved at t=2h); "small" needs 2 for 1 h:
    # it ends before the reservation, so it starts now.
    busy = part("x", 8, free=4, running=(Running(4, 2 * H),))
    d = schedule(snap([job("big", 8, at=0), job("small", 2, hours=1, at=1)], [busy]))
    assert placed(d) == {"small": "x"}
    assert d.assignments[0].backfilled
    assert d.reservation is not None and d.reservation.job == "big"
    assert d.reservation.start == 2 * H


def test_a_backfill_that_must_not_happen() -> None:
    # the same, but "small" runs 3 h: it would still hold 2 GPUs when "big" should start
    busy = part("x", 8, free=4, running=(Running(4, 2 * H),))
    d = schedule(snap([job("big", 8, at=0), job("small", 2, hours=3, at=1)], [busy]))
    assert placed(d) == {}
    assert "held for a higher-priority job" in reason(d, "small")


def test_a_long_backfill_may_use_gpus_the_reservation_does_not_need() -> None:
    # big needs 6 at t=2h when 8 are free: 2 spare GPUs may go to a long job now
    busy = part("x", 8, free=4, running=(Running(4, 2 * H),))
    d = schedule(
        snap(
            [job("big", 6, at=0), job("long", 2, hours=9, at=1), job("long2", 2, hours=9, at=2)],
            [busy],
        )
    )
    assert placed(d) == {"long": "x"}


def test_without_backfill_a_blocked_job_blocks_its_partition() -> None:
    busy = part("x", 8, free=4, running=(Running(4, 2 * H),))
    d = schedule(
        snap(
            [job("big", 8, at=0), job("small", 2, hours=1, at=1)],
            [busy],
            policy=Policy(backfill=False),
        )
    )
    assert placed(d) == {}


def test_a_job_that_fits_only_one_factory_goes_there() -> None:
    parts = [part("small", 4), part("mid", 8, gpu_model="a100"), part("big", 16, country="IT")]
    d = schedule(snap([job("j", 12)], parts))
    assert placed(d) == {"j": "big"}
    d = schedule(snap([job("j", 8, gpu_model="a100")], parts))
    assert placed(d) == {"j": "mid"}


def test_allow_list_residency_and_home_country() -> None:
    parts = [part("de1", 8), part("it1", 8, country="IT"), part("fr1", 8, country="FR")]
    d = schedule(snap([job("j", 2, countries=frozenset({"DE"}))], parts))
    assert placed(d) == {"j": "de1"}
    d = schedule(snap([job("j", 2, factories=frozenset({"fr1"}))], parts))
    assert placed(d) == {"j": "fr1"}
    d = schedule(snap([job("j", 2, home_country="IT")], parts))
    assert placed(d) == {"j": "it1"}


def test_the_least_loaded_factory_wins_a_tie() -> None:
    d = schedule(snap([job("j", 2)], [part("a", 8, free=2), part("b", 8, free=6)]))
    assert placed(d) == {"j": "b"}


def test_reasons_name_the_rule() -> None:
    parts = [part("jaif", 8), part("it4lia", 8, country="IT", gpu_model="a100")]
    d = schedule(snap([job("m", 1, gpu_model="mi300x")], parts))
    assert reason(d, "m") == "no allowed factory offers mi300x GPUs"
    d = schedule(snap([job("r", 1, countries=frozenset({"ES"}))], parts))
    assert reason(d, "r") == "no allowed factory is in ES"
    d = schedule(snap([job("s", 64)], parts))
    assert "fits 64 GPUs" in reason(d, "s")
    d = schedule(snap([job("n", 2, nodes=2)], [part("one", 8, multi_node=False)]))
    assert reason(d, "n") == "no allowed factory runs multi-node jobs"


def test_an_allocation_too_small_for_the_worst_case_is_named() -> None:
    # 4 GPUs x 2 h = 8 GPU-hours; the allocation has 3.5 left
    d = schedule(snap([job("j", 4, hours=2)], [part("it4lia", 8)], grants("it4lia", hours=3.5)))
    assert reason(d, "j") == "allocation on it4lia has 3.5 GPU-hours left, job needs 8.0"
    d = schedule(snap([job("j", 4, hours=2)], [part("it4lia", 8)], ()))
    assert reason(d, "j") == "project p holds no valid allocation at it4lia"


def test_two_jobs_never_share_the_last_allocated_hours() -> None:
    d = schedule(
        snap(
            [job("a", 4, hours=1, at=0), job("b", 4, hours=1, at=1)],
            [part("x", 16)],
            grants("x", hours=6),
        )
    )
    assert placed(d) == {"a": "x"}
    assert "has 2.0 GPU-hours left" in reason(d, "b")


def test_whole_node_billing_charges_full_nodes() -> None:
    lumi = part("lumi", 16, gpus_per_node=8, whole_nodes=True, billing_factor=0.5)
    d = schedule(snap([job("j", 1, hours=2)], [lumi]))
    assert d.assignments[0].charge_gpu_hours == 8.0  # 8 GCDs x 0.5 x 2 h


def test_whole_node_billing_charges_every_node_of_a_multi_node_job() -> None:
    lumi = part("lumi", 16, gpus_per_node=8, whole_nodes=True, billing_factor=0.5)
    d = schedule(snap([job("j", 2, hours=2, nodes=2)], [lumi]))  # 1 GCD on each of 2 nodes
    assert d.assignments[0].charge_gpu_hours == 16.0  # 2 nodes x 8 GCDs x 0.5 x 2 h


def test_waiting_reason_gives_the_earliest_start() -> None:
    busy = part("jaif", 8, free=0, running=(Running(8, 2 * H + 600),))
    d = schedule(snap([job("j", 8)], [busy]))
    (wait,) = d.waiting
    assert wait.estimated_start == 2 * H + 600 and wait.factory == "jaif"
    assert wait.reason.endswith("earliest estimated start in 2 h 10 min at jaif")


def test_fair_share_puts_a_light_user_first() -> None:
    jobs = [job("heavy", 8, at=0, project="heavy"), job("light", 8, at=100, project="light")]
    allocs = (*grants("x", project="heavy"), Allocation(9, "light", "x", 1e6))
    d = schedule(snap(jobs, [part("x", 8)], allocs, usage={"heavy": 1000.0, "light": 10.0}))
    assert d.order == ("light", "heavy")
    assert placed(d) == {"light": "x"}


def test_after() -> None:
    assert [after(s) for s in (0, 30, 600, 7800, 3 * 86400)] == [
        "now",
        "in 30 s",
        "in 10 min",
        "in 2 h 10 min",
        "in 3.0 days",
    ]


def test_each_partition_protects_its_own_blocked_job() -> None:
    # x and y are full for 2 h (x) and 3 h (y). "big1" reserves x at 2 h; "big2" cannot
    # take x any more and reserves y at 3 h. "small" (4 GPUs, 4 h) fits the 4 free GPUs of
    # either, but would delay a reservation on both: it waits.
    x = part("x", 8, free=4, running=(Running(4, 2 * H),))
    y = part("y", 8, free=4, running=(Running(4, 3 * H),))
    jobs = [job("big1", 8, at=0), job("big2", 8, at=1), job("small", 4, hours=4, at=2)]
    d = schedule(snap(jobs, [x, y]))
    assert [(r.job, r.factory, r.start) for r in d.reservations] == [
        ("big1", "x", 2 * H),
        ("big2", "y", 3 * H),
    ]
    assert placed(d) == {}
    # with one reservation for the federation, big2 is unprotected and small takes y
    one = schedule(snap(jobs, [x, y], policy=Policy(reservations="federation")))
    assert [r.job for r in one.reservations] == ["big1"]
    assert placed(one) == {"small": "y"}
