"""The engine on hand-made traces whose right answer is known by hand."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabbrica.sim.engine import (
    LEASE,
    POLICIES,
    Outage,
    SimulationError,
    _Part,
    simulate,
    time_limit,
)
from fabbrica.sim.federation import Federation, Site
from fabbrica.sim.trace import TraceJob

H = 3600.0


def one_site(gpus: int) -> Federation:
    return Federation((Site("x", gpus, ("x",)),))


def two_sites(x: int, y: int) -> Federation:
    return Federation((Site("x", x, ("x",)), Site("y", y, ("y",))))


def starts(jobs: list[TraceJob], federation: Federation, policy: str) -> list[float]:
    return list(simulate(jobs, federation, policy).starts)


def test_time_limits_round_the_run_time_up_to_the_next_hour() -> None:
    assert time_limit(1, 1.0) == H
    assert time_limit(H, 1.0) == H
    assert time_limit(H + 1, 1.0) == 2 * H
    assert time_limit(0, 1.0) == H
    assert time_limit(H, 2.0) == 2 * H


def test_fifo_order_on_one_site() -> None:
    jobs = [
        TraceJob(0, 100, 2, "x"),
        TraceJob(1, 50, 2, "x"),
        TraceJob(2, 10, 1, "x"),
    ]
    # 2 GPUs in all: B waits for A, and C (1 GPU) waits behind B
    assert starts(jobs, one_site(2), "site-fifo") == [0, 100, 150]


# A holds 2 of 4 GPUs for up to 2 h; B needs all 4 and reserves A's expected end (7200).
BLOCKED = [TraceJob(0, 7200, 2, "x"), TraceJob(10, 3600, 4, "x")]


def test_a_backfill_that_must_happen() -> None:
    # C fits the 2 free GPUs and its limit (1 h) ends before B's reserved start
    jobs = [*BLOCKED, TraceJob(20, 3000, 2, "x")]
    assert starts(jobs, one_site(4), "site-backfill") == [0, 7200, 20]
    # strict FIFO keeps C behind B: B runs 7200..10800, then C
    assert starts(jobs, one_site(4), "site-fifo") == [0, 7200, 10800]


def test_a_backfill_that_must_not_happen() -> None:
    # C's limit (3 h) would run past B's reserved start and B needs every GPU
    jobs = [*BLOCKED, TraceJob(20, 10_000, 2, "x")]
    assert starts(jobs, one_site(4), "site-backfill") == [0, 7200, 10800]


def test_backfill_plans_with_the_limit_but_the_job_ends_at_its_run_time() -> None:
    # A's limit is 2 h but it runs 1000 s: B starts when A really ends
    jobs = [TraceJob(0, 1000, 2, "x"), TraceJob(10, 3600, 4, "x")]
    assert starts(jobs, one_site(4), "site-backfill") == [0, 1000]


def test_a_job_that_fits_only_one_factory_runs_there() -> None:
    jobs = [TraceJob(0, 100, 8, "x"), TraceJob(0, 100, 4, "x")]
    run = simulate(jobs, two_sites(4, 8), "federated")
    assert run.factories == ("y", "x")
    assert run.starts == (0, 0)


def test_federated_uses_another_factory_where_the_home_one_is_full() -> None:
    jobs = [TraceJob(0, 100, 2, "x"), TraceJob(5, 100, 2, "x")]
    assert starts(jobs, two_sites(2, 2), "site-backfill") == [0, 100]
    run = simulate(jobs, two_sites(2, 2), "federated")
    assert run.starts == (0, 5)
    assert run.factories == ("x", "y")


def test_federated_prefers_the_home_factory_when_it_has_room() -> None:
    # y is emptier, but the job's home x can start it now
    jobs = [TraceJob(0, 100, 1, "x")]
    run = simulate(jobs, two_sites(4, 64), "federated")
    assert run.factories == ("x",)


def test_pooled_is_one_partition_of_all_gpus() -> None:
    jobs = [TraceJob(0, 100, 3, "x"), TraceJob(0, 100, 3, "y")]
    # 3 + 3 > 4 at either site alone, but the pool has 6
    run = simulate(jobs, two_sites(2, 4), "pooled")
    assert run.starts == (0, 0)
    assert run.factories == ("pool", "pool")
    assert run.capacity == 6


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_runs_every_job_once(policy: str) -> None:
    jobs = [TraceJob(t * 7.0, 50 + (t * 37) % 400, 1 + t % 3, "xy"[t % 2]) for t in range(200)]
    run = simulate(jobs, two_sites(4, 4), policy)
    assert all(s >= j.submit for s, j in zip(run.starts, jobs, strict=True))
    assert run.events == 400
    assert run.passes >= 1


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="site-fifo"):
        simulate([TraceJob(0, 1, 1, "x")], one_site(1), "round-robin")


def test_a_job_larger_than_every_factory_is_a_conservation_failure() -> None:
    with pytest.raises(SimulationError, match="never start"):
        simulate([TraceJob(0, 1, 8, "x")], one_site(4), "federated")


def test_a_partition_refuses_more_gpus_than_it_has_free() -> None:
    part = _Part("x", "x", 4)
    part.start(1, 3, 10.0)
    with pytest.raises(SimulationError, match="2 GPUs started on 1 free"):
        part.start(2, 2, 10.0)
    with pytest.raises(SimulationError, match="did not run"):
        part.end(3, 1, 10.0)
    part.end(1, 3, 10.0)
    assert part.free == 4


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 20_000), st.integers(1, 9000), st.integers(1, 4), st.sampled_from("xy")
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(POLICIES),
)
def test_skipped_passes_change_nothing(
    monkeypatch: pytest.MonkeyPatch, rows: list[tuple[float, int, int, str]], policy: str
) -> None:
    """The engine skips the pass after an arrival that fits no free GPUs; running every
    pass instead must give the same starts and factories."""
    from fabbrica.sim import engine

    jobs = sorted((TraceJob(t, d, g, c) for t, d, g, c in rows), key=lambda j: j.submit)
    federation = two_sites(4, 6)
    skipping = simulate(jobs, federation, policy)
    with monkeypatch.context() as patch:
        patch.setattr(engine._Queue, "could_start", lambda self, gpus: True)
        every = simulate(jobs, federation, policy)
    assert every.starts == skipping.starts
    assert every.factories == skipping.factories
    assert every.passes >= skipping.passes


def test_naive_sends_each_job_to_the_least_loaded_factory_that_fits() -> None:
    # a (2 GPUs, home x) goes to the emptier y; b (4 GPUs) fits only y, and waits there
    # behind a although x is free; c (1 GPU) goes to x, now the least loaded
    jobs = [TraceJob(0, 100, 2, "x"), TraceJob(1, 100, 4, "x"), TraceJob(2, 100, 1, "y")]
    run = simulate(jobs, two_sites(2, 4), "naive")
    assert run.factories == ("y", "y", "x")
    assert run.starts == (0, 100, 2)


def test_an_outage_loses_what_runs_there_after_the_lease_and_queues_it_again() -> None:
    # a runs on x from 0; x is down from 1000 to 5000; a is lost at 1060 after 1060 s on
    # 2 GPUs, queued again, and restarts on y; b arriving during the outage avoids x
    jobs = [TraceJob(0, 3000, 2, "x"), TraceJob(2000, 100, 1, "x")]
    outage = Outage("x", 1000.0, 4000.0)
    run = simulate(jobs, two_sites(2, 3), "federated", outages=[outage])
    assert run.starts == (1000 + LEASE, 2000)
    assert run.factories == ("y", "y")
    assert run.requeued == 1
    assert run.lost_gpu_hours == pytest.approx(2 * (1000 + LEASE) / H)
    # under site-backfill both wait for x to come back, then run one after the other
    site = simulate(jobs, two_sites(2, 3), "site-backfill", outages=[outage])
    assert site.starts == (5000, 8000)
    # an outage shorter than the lease loses nothing
    short = simulate(jobs, two_sites(2, 2), "federated", outages=[Outage("x", 1000.0, 30.0)])
    assert short.starts == (0, 2000) and short.requeued == 0


def test_an_outage_shrinks_the_pool_and_loses_the_latest_runs() -> None:
    # pool of 4 (x 2 + y 2); x down at 1000: the pool has 2 GPUs, so of a (started 0) and
    # b (started 10), b is lost and waits for x's return
    jobs = [TraceJob(0, 9000, 2, "x"), TraceJob(10, 9000, 2, "y")]
    # counted in GPUs (without nodes: the pool's one 4-GPU node would go out whole)
    outage = [Outage("x", 1000.0, 2000.0)]
    run = simulate(jobs, two_sites(2, 2), "pooled", outages=outage, pack_nodes=False)
    assert run.starts == (0, 3000)
    assert run.requeued == 1
    assert run.lost_gpu_hours == pytest.approx(2 * (1000 + LEASE - 10) / H)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_job_completes_once_through_outages(policy: str) -> None:
    jobs = [TraceJob(t * 7.0, 50 + (t * 37) % 400, 1 + t % 3, "xy"[t % 2]) for t in range(200)]
    outages = [Outage("x", 100.0, 300.0), Outage("y", 350.0, 500.0), Outage("x", 900.0, 90.0)]
    run = simulate(jobs, two_sites(4, 4), policy, outages=outages)
    assert all(s >= j.submit for s, j in zip(run.starts, jobs, strict=True))
    assert run.requeued > 0
    assert run.events == 400 + 2 * run.requeued


def test_an_outage_of_an_unknown_factory_is_refused() -> None:
    with pytest.raises(ValueError, match="no such factory"):
        simulate([TraceJob(0, 1, 1, "x")], one_site(1), "federated", outages=[Outage("z", 0, 1)])
